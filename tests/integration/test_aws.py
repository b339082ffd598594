"""boto3 through the AwsCredentials block against moto (the sandbox's AWS)."""

from __future__ import annotations

import uuid

import pytest

from blocks import AWS_BLOCK, AwsCredentials, TerraformBackend
from tools import aws

pytestmark = pytest.mark.integration


def test_the_block_client_reaches_moto_and_lists_amis(blocks, sandbox_env):
    creds = AwsCredentials.load(AWS_BLOCK)
    assert creds.aws_client_parameters.endpoint_url == sandbox_env["AWS_ENDPOINT_URL"]
    ec2 = creds.get_client("ec2")
    images = ec2.describe_images(Owners=["099720109477"])["Images"]
    assert images and all(i["ImageId"].startswith("ami-") for i in images)
    # the image the sandbox bakes from (infra/packer/vars/sandbox.json), as Packer's filter picks it
    source = aws.source_image(ec2, "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*", "099720109477")
    assert source is not None and source.image_id in {i["ImageId"] for i in images}


def test_aws_errors_carry_the_api_message(blocks):
    ec2 = AwsCredentials.load(AWS_BLOCK).get_client("ec2")
    with pytest.raises(aws.AwsError, match="InvalidAMIID|does not exist|not found") as caught:
        aws.call("describe_images", ec2.describe_images, ImageIds=["ami-00000000deadbeef"])
    assert caught.value.tail and not caught.value.transient


def test_read_object_of_the_state_bucket(blocks, sandbox_env):
    backend = TerraformBackend.load("devops-tf-backend")
    s3 = AwsCredentials.load(AWS_BLOCK).get_boto3_session().client("s3", endpoint_url=backend.endpoint_url)
    key = f"tests/read-object-{uuid.uuid4().hex[:8]}"
    assert aws.read_object(s3, backend.bucket, key) is None
    s3.put_object(Bucket=backend.bucket, Key=key, Body=b'{"ID": "x"}')
    try:
        assert aws.read_object(s3, backend.bucket, key) == b'{"ID": "x"}'
    finally:
        s3.delete_object(Bucket=backend.bucket, Key=key)
