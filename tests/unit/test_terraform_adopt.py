"""Which orphans of a killed first apply are adopted (tools/terraform_adopt.py), over plan JSON and what
AWS holds, as pure decisions."""

from __future__ import annotations

from tools.terraform_adopt import Existing, Wanted, choose_adoptions, wanted_creates

SUFFIX = "20261205235959123400000001"


def change(address: str, type_: str, actions: list[str], **after: str) -> dict:
    return {
        "address": address,
        "mode": "managed",
        "type": type_,
        "change": {"actions": actions, "after": after},
    }


PLAN = {
    "resource_changes": [
        change("aws_security_group.xwiki", "aws_security_group", ["create"], name_prefix="xw-"),
        change("aws_launch_template.xwiki-lt", "aws_launch_template", ["create"], name_prefix="lt-xw"),
        change("aws_autoscaling_group.xwiki", "aws_autoscaling_group", ["create"], name="xw"),
        change("aws_security_group.kept", "aws_security_group", ["update"], name="kept"),
        change("aws_security_group.replaced", "aws_security_group", ["delete", "create"], name="r"),
        change("terraform_data.hold[0]", "terraform_data", ["create"]),
        {**change("data.aws_ami.x", "aws_ami", ["read"]), "mode": "data"},
    ]
}


def test_only_pure_creates_of_adoptable_types_with_a_name_are_wanted():
    wanted = wanted_creates(PLAN)
    assert [(w.address, w.name, w.name_prefix) for w in wanted] == [
        ("aws_security_group.xwiki", "", "xw-"),
        ("aws_launch_template.xwiki-lt", "", "lt-xw"),
        ("aws_autoscaling_group.xwiki", "xw", ""),
    ]
    assert wanted_creates({}) == []


def test_a_prefix_matches_only_terraforms_unique_suffix():
    want = Wanted(address="a", type="aws_launch_template", name_prefix="lt-xw")
    assert want.matches("lt-xw" + SUFFIX)
    assert not want.matches("lt-xw-other" + SUFFIX)  # another stack's name that shares the prefix
    assert not want.matches("lt-xw")
    assert Wanted(address="a", type="t", name="xw").matches("xw")


def test_the_chain_of_one_killed_apply_is_adopted():
    existing = Existing(
        groups={"xw": "lt-1"},
        launch_templates={"lt-1": "lt-xw" + SUFFIX, "lt-2": "lt-xw" + SUFFIX.replace("1234", "5678")},
        launch_template_groups={"lt-1": ["sg-1"], "lt-2": ["sg-2"]},
        security_groups={"sg-1": "xw-" + SUFFIX, "sg-2": "xw-" + SUFFIX[:-1] + "2", "sg-3": "default"},
    )
    chosen = {a.address: a.id for a in choose_adoptions(wanted_creates(PLAN), existing)}
    assert chosen == {
        "aws_autoscaling_group.xwiki": "xw",
        "aws_launch_template.xwiki-lt": "lt-1",  # the one the ASG uses, though two match
        "aws_security_group.xwiki": "sg-1",  # the one that launch template uses
    }


def test_without_a_chain_only_a_single_match_is_adopted():
    one = Existing(launch_templates={"lt-1": "lt-xw" + SUFFIX}, security_groups={"sg-9": "default"})
    chosen = {a.address: a.id for a in choose_adoptions(wanted_creates(PLAN), one)}
    assert chosen == {"aws_launch_template.xwiki-lt": "lt-1"}
    two = Existing(launch_templates={"lt-1": "lt-xw" + SUFFIX, "lt-2": "lt-xw" + SUFFIX[:-1] + "2"})
    assert choose_adoptions(wanted_creates(PLAN), two) == []  # ambiguous: create a new one instead
    assert choose_adoptions(wanted_creates(PLAN), Existing()) == []
