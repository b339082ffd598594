"""Packer var layering, name validation, machine-readable parsing, content hash."""

from __future__ import annotations

import pytest

from tools import packer
from tools.errors import InvalidInput


def test_layers_are_ordered_and_later_files_win():
    files = packer.layer_files("xwiki", "ubuntu-18.04", "build")
    assert [f.parent.name for f in files] == ["vars", "os", "mode", "host"]
    merged = packer.merge_layers(files)
    assert merged["environment"] == "dev" and merged["hostname"] == "xwiki"
    jenkins = packer.merge_layers(packer.layer_files("jenkins", "ubuntu-18.04", "ci"))
    assert jenkins["root_size"] == "30"  # host overrides common's 10
    assert jenkins["spot_price"] == "0"  # mode overrides common's auto


@pytest.mark.parametrize("host", ["nope", "../vars/common", "", "a/b", ".."])
def test_unknown_or_escaping_names_are_rejected_listing_valid_ones(host):
    with pytest.raises(InvalidInput, match="valid host names: jenkins, xwiki"):
        packer.layer_files(host, "ubuntu-18.04", "build")


def test_machine_readable_artifact_and_ui_lines():
    out = packer.BuildOutput()
    for raw in [
        "1796149547,,ui,say,==> xwiki: Found Image ID%!(PACKER_COMMA) ok",
        "1796149547,xwiki_ubuntu18.04,artifact,0,id,eu-central-1:ami-1a93536ae44c54189",
        "1796149547,xwiki_ubuntu18.04,error,boom",
    ]:
        out.feed(packer.parse_machine_line(raw))
    assert out.ami_ids == ["ami-1a93536ae44c54189"]
    assert out.artifacts[0].region == "eu-central-1"
    assert out.ui == ["==> xwiki: Found Image ID, ok"] and out.errors == ["boom"]


def test_content_hash_depends_on_variables_source_and_provisioner_files():
    template = packer.PACKER_DIR / packer.TEMPLATE
    base = packer.merge_layers(packer.layer_files("xwiki", "ubuntu-18.04", "build"))
    h1 = packer.content_hash(template, base, "ami-1")
    assert h1 == packer.content_hash(template, {**base, "git_commit": "x"}, "ami-1")  # provenance only
    assert h1 != packer.content_hash(template, {**base, "environment": "prod"}, "ami-1")
    assert h1 != packer.content_hash(template, base, "ami-2")
    files = packer.provisioner_files(__import__("json").loads(template.read_text()), base)
    assert any(p.name == "main.yml" for p in files)


def test_var_files_must_be_objects_without_reserved_keys(tmp_path):
    import json
    import shutil

    shutil.copytree(packer.PACKER_DIR / "vars", tmp_path / "vars")
    host = tmp_path / "vars" / "host" / "xwiki.json"
    for text, message in [('["x"]', "JSON object"), (json.dumps({"content_hash": "forged"}), "content_hash")]:
        host.write_text(text)
        with pytest.raises(InvalidInput, match=message):
            packer.merge_layers(packer.layer_files("xwiki", "ubuntu-18.04", "build", base=tmp_path))


def test_ami_name_carries_the_content_hash():
    name = packer.ami_name({"hostname": "xwiki", "os_name": "ubuntu18.04"}, "ab" * 32)
    assert name == "xwiki_ubuntu18.04_" + "ab" * 6


def test_packer_max_retries_follows_the_aws_block_retry_setting() -> None:
    from blocks import AwsClientParameters, AwsCredentials
    from tasks.packer import _max_retries

    def block(config: dict | None) -> AwsCredentials:
        params = AwsClientParameters(config=config)
        return AwsCredentials(region_name="eu-central-1", aws_client_parameters=params)

    assert _max_retries(block(None)) == ""  # Packer's own default
    assert _max_retries(block({"retries": {"max_attempts": 4}})) == "3"
    assert _max_retries(block({"retries": {"max_attempts": 1}})) == "1"  # Packer reads 0 as its default
    assert "aws_max_retries" in packer.RESERVED
