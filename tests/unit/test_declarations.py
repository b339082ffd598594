"""prefect.yaml as declared: strict parsing catches what Prefect silently ignores."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from pydantic import ValidationError

from deployments.declarations import PREFECT_YAML, PrefectYaml, load

EXPECTED = {
    "devops-packer-xwiki",
    "devops-refresh-servers",
    "detect-drift",
    "release",
    "build-app",
    "publish-image",
    "deploy-app",
    "bake-image",
    "apply-stack",
    "prune-images",
}


def raw() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def test_every_flow_has_a_deployment() -> None:
    assert {d.name for d in load().deployments} == EXPECTED


def test_the_article_schedules() -> None:
    by_name = {d.name: d for d in load().deployments}
    xwiki = by_name["devops-packer-xwiki"]
    assert [s.cron for s in xwiki.schedules] == ["0 */2 * * *"]
    assert xwiki.parameters["request"]["bake"]["host"] == "xwiki"
    assert all(s.timezone == "UTC" for d in by_name.values() for s in d.schedules)
    assert by_name["devops-refresh-servers"].schedules and by_name["detect-drift"].schedules
    assert all(d.enforce_parameter_schema for d in by_name.values())


def test_a_typo_in_a_deployment_key_is_an_error() -> None:
    data = raw()
    data["deployments"][0]["schedulez"] = data["deployments"][0].pop("schedules")
    with pytest.raises(ValidationError, match="schedulez"):
        PrefectYaml.model_validate(data)


@pytest.mark.parametrize("cron", ["0 */2 * *", "61 * * * *", "every two hours", ""])
def test_an_invalid_cron_is_an_error(cron: str) -> None:
    data = raw()
    data["deployments"][0]["schedules"][0]["cron"] = cron
    with pytest.raises(ValidationError):
        PrefectYaml.model_validate(data)


def test_collision_strategy_is_a_known_value() -> None:
    data = raw()
    data["deployments"][0]["concurrency_limit"]["collision_strategy"] = "DROP"
    with pytest.raises(ValidationError):
        PrefectYaml.model_validate(data)


@pytest.mark.parametrize(
    ("cron", "window"),
    [
        ("0 */2 * * *", timedelta(hours=3)),  # the rollout every 2 hours: missed after 3
        ("*/30 * * * *", timedelta(minutes=45)),
        ("0 6 * * *", timedelta(hours=36)),
        ("0 6 * * 1-5", timedelta(days=4, hours=12)),  # the longest gap, Friday to Monday, counts
    ],
)
def test_the_missed_run_window_is_the_longest_gap_and_a_half(cron: str, window: timedelta) -> None:
    from deployments.setup import expected_window

    assert expected_window(cron) == window
