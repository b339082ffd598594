"""The sandbox's moto fix for tagged launch templates, in process (moto's mock): the template keeps its
own tags, its version's data does not get them, and tags changed later are shown (so a tagged launch
template converges)."""

from __future__ import annotations

import boto3
from moto import mock_aws

from devenv import moto_server as sandbox_moto


def test_a_launch_templates_own_tags_stay_out_of_its_version_data(monkeypatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    # after a sandbox test in the same process, boto3 would send every call to the sandbox's moto server
    # (AWS_ENDPOINT_URL), past this in-process mock
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    sandbox_moto._patch()
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-central-1")
        volume = {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "root"}]}
        made = ec2.create_launch_template(
            LaunchTemplateName="tagged",
            LaunchTemplateData={"ImageId": "ami-12345678", "TagSpecifications": [volume]},
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "owner", "Value": "p"}]}],
        )["LaunchTemplate"]
        assert made["Tags"] == [{"Key": "owner", "Value": "p"}]
        version = ec2.describe_launch_template_versions(LaunchTemplateId=made["LaunchTemplateId"])
        assert version["LaunchTemplateVersions"][0]["LaunchTemplateData"]["TagSpecifications"] == [volume]
        plain = ec2.create_launch_template(
            LaunchTemplateName="plain",
            LaunchTemplateData={"ImageId": "ami-12345678"},
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "owner", "Value": "p"}]}],
        )["LaunchTemplate"]
        data = ec2.describe_launch_template_versions(LaunchTemplateId=plain["LaunchTemplateId"])
        assert "TagSpecifications" not in data["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        ec2.create_tags(Resources=[plain["LaunchTemplateId"]], Tags=[{"Key": "environment", "Value": "prod"}])
        described = ec2.describe_launch_templates(LaunchTemplateIds=[plain["LaunchTemplateId"]])
        tags = {t["Key"]: t["Value"] for t in described["LaunchTemplates"][0]["Tags"]}
        assert tags == {"owner": "p", "environment": "prod"}


def test_a_retry_of_an_answered_call_gets_the_first_answer_again() -> None:
    """A retried call that changes something is not run twice: its first answer is kept by invocation id
    (a 5xx or a large answer is not kept: that retry runs again)."""
    assert sandbox_moto._attempt("attempt=2; max=25") == 2
    assert sandbox_moto._attempt("attempt=1") == 1 and sandbox_moto._attempt("") == 1
    answers = sandbox_moto._Answers()
    answers.keep("inv-1", "200 OK", [("Content-Type", "text/xml")], b"<groupId>sg-1</groupId>")
    answers.keep("inv-2", "500 INTERNAL SERVER ERROR", [], b"boom")
    answers.keep("inv-3", "200 OK", [], b"x" * (answers.MAX_BYTES + 1))
    assert answers.get("inv-1") == ("200 OK", [("Content-Type", "text/xml")], b"<groupId>sg-1</groupId>")
    assert answers.get("inv-2") is None and answers.get("inv-3") is None and answers.get("") is None
