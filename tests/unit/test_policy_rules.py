"""The shipped policy rules (infra/policies) over `terraform show -json` plan fragments."""

from __future__ import annotations

import pytest

from tools import policy

XWIKI = "scalac/internal-prod/xwiki"
TAGS = {"owner": "platform", "environment": "prod"}


def _rc(address: str, actions: list[str], after: dict | None = None, **change: object) -> dict:
    return {
        "address": address,
        "mode": "managed",
        "type": address.split(".")[0],
        "change": {"actions": actions, "after": after or {}, **change},
    }


def _check(rule: str, changes: list[dict], options: dict | None = None) -> list:
    module = policy._load_rule(rule, policy.POLICY_DIR)
    opts = options or {}
    if hasattr(module, "validate"):
        module.validate(opts)
    return policy._findings(module.check({"resource_changes": changes}, opts))


def test_protect_asg_launch_template_denies_destroy_and_replace_but_not_a_new_version() -> None:
    changes = [
        _rc("aws_autoscaling_group.xwiki", ["delete", "create"]),
        _rc("aws_launch_template.xwiki-lt", ["delete"]),
        _rc("aws_launch_template.other", ["update"], {"image_id": "ami-2"}),
        _rc("aws_security_group.xwiki", ["delete", "create"]),
    ]
    found = _check("protect-asg-launch-template", changes)
    assert found == [
        ("deny", "aws_autoscaling_group.xwiki would be replaced (delete and create)"),
        ("deny", "aws_launch_template.xwiki-lt would be destroyed"),
    ]
    assert _check("protect-asg-launch-template", [_rc("aws_launch_template.a", ["create"])]) == []


def test_instance_type_allowlist() -> None:
    allowed = {"allowed": ["t3.nano", "t3.small"]}
    changes = [
        _rc("aws_launch_template.ok", ["create"], {"instance_type": "t3.small"}),
        _rc("aws_launch_template.big", ["update"], {"instance_type": "m5.24xlarge"}),
        _rc("aws_launch_template.unset", ["create"], {"instance_type": None}),
        _rc("aws_instance.gone", ["delete"], {}),
        _rc("aws_instance.later", ["create"], {}, after_unknown={"instance_type": True}),
    ]
    found = _check("instance-type-allowlist", changes, allowed)
    assert [f.level for f in found] == ["deny", "warn"]
    assert "aws_launch_template.big" in found[0].message and "m5.24xlarge" in found[0].message
    with pytest.raises(ValueError, match="allowed"):
        _check("instance-type-allowlist", changes, {})


def test_require_tags_over_tags_tags_all_and_asg_tag_blocks() -> None:
    required = {"tags": ["owner", "environment"]}
    changes = [
        _rc("aws_security_group.ok", ["create"], {"tags": TAGS}),
        _rc("aws_security_group.default_tags", ["create"], {"tags": {"owner": "p"}, "tags_all": TAGS}),
        _rc("aws_launch_template.untagged", ["update"], {"tags": None}),
        _rc("aws_security_group.empty_owner", ["create"], {"tags": {**TAGS, "owner": ""}}),
        _rc(
            "aws_autoscaling_group.xwiki",
            ["create"],
            {"tag": [{"key": "environment", "value": "prod", "propagate_at_launch": True}]},
        ),
        _rc("terraform_data.hold", ["create"], {"input": None}),  # takes no tags
        _rc("aws_security_group.gone", ["delete"], {}),
    ]
    found = _check("require-tags", changes, required)
    assert found == [
        ("deny", "aws_launch_template.untagged lacks the tag(s) owner, environment"),
        ("deny", "aws_security_group.empty_owner lacks the tag(s) owner"),
        ("deny", "aws_autoscaling_group.xwiki lacks the tag(s) owner"),
    ]
    ignored = _check("require-tags", changes, {**required, "ignore_types": ["aws_launch_template"]})
    assert len(ignored) == 2


def test_warn_on_replacement_names_the_forcing_attributes_and_ignores_terraform_data() -> None:
    changes = [
        _rc("aws_security_group.x", ["delete", "create"], replace_paths=[["description"]]),
        _rc("aws_instance.y", ["create", "delete"]),
        _rc("terraform_data.apply_hold[0]", ["delete", "create"]),
        _rc("aws_launch_template.z", ["update"]),
    ]
    found = _check("warn-on-replacement", changes)
    assert found == [
        ("warn", "aws_security_group.x would be replaced (forced by description)"),
        ("warn", "aws_instance.y would be replaced"),
    ]


def test_the_shipped_selection_validates_and_the_xwiki_plan_of_a_rollout_passes() -> None:
    chosen = policy.selection(XWIKI)
    assert list(chosen) == [
        "protect-asg-launch-template",
        "instance-type-allowlist",
        "require-tags",
        "warn-on-replacement",
    ]
    rollout = {
        "resource_changes": [
            _rc(
                "aws_launch_template.xwiki-lt",
                ["update"],
                {"image_id": "ami-2", "instance_type": "t3.small", "tags": {**TAGS, "Name": "xwiki"}},
            ),
            _rc("terraform_data.apply_hold[0]", ["delete", "create"], {}),
        ]
    }
    report = policy.evaluate(XWIKI, rollout)
    assert report.level is policy.Level.passed, report.results
    assert {r.rule for r in report.results} == set(chosen)


def test_the_xwiki_stack_declares_the_tags_it_is_required_to_carry() -> None:
    from tools import terraform as tf

    stack = tf.resolve_stack(XWIKI)
    assert "owner" in tf.declared_variables(stack)
    main = (stack / "main.tf").read_text()
    assert main.count("owner       = var.owner") == 2 and 'key                 = "owner"' in main


def test_a_stack_without_an_entry_has_no_policies() -> None:
    assert not policy.has_policies("sandbox/smoke")
    assert policy.evaluate("sandbox/smoke", {"resource_changes": []}).results == []
