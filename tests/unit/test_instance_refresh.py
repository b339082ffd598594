"""The instance refresh request sent to AWS, when the fallback is chosen, and the batch arithmetic."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from tasks.instance_refresh import HealthGate
from tools.errors import InvalidInput
from tools.instance_refresh import Preferences, batch_size, refresh_request, unsupported


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "StartInstanceRefresh",
    )


def test_the_request_is_a_rolling_refresh_to_that_version_with_our_preferences() -> None:
    prefs = Preferences(
        min_healthy_percentage=90, instance_warmup_seconds=60, checkpoint_percentages=[50, 20]
    )
    request = refresh_request("xwiki", "lt-0123", "7", prefs)
    assert request == {
        "AutoScalingGroupName": "xwiki",
        "Strategy": "Rolling",
        "DesiredConfiguration": {"LaunchTemplate": {"LaunchTemplateId": "lt-0123", "Version": "7"}},
        "Preferences": {
            "MinHealthyPercentage": 90,
            "InstanceWarmup": 60,
            "SkipMatching": True,  # instances already on the new version stay
            "AutoRollback": False,  # the rollout rolls back itself: launch template and instances
            "CheckpointPercentages": [20, 50, 100],  # sorted, ending at 100 as AWS requires
            "CheckpointDelay": 0,
        },
    }
    assert "CheckpointPercentages" not in refresh_request("x", "lt", "1", Preferences())["Preferences"]


@pytest.mark.parametrize(
    ("exc", "fallback"),
    [
        (_client_error("NotImplemented", 501), True),
        (_client_error("NotImplementedException", 400), True),
        (_client_error("Whatever", 501), True),
        (
            ResponseParserError(
                "Unable to parse response (syntax error), invalid XML received. Further retries may succeed:"
                "b'<!doctype html>\\n<html lang=en>\\n<title>500 Internal Server Error</title>'"
            ),
            True,  # moto's server: an HTML error page instead of the API's answer
        ),
        (_client_error("ValidationError", 400), False),
        (_client_error("InstanceRefreshInProgress", 400), False),
        (_client_error("InternalFailure", 500), False),  # AWS down: an error, never a silent fallback
        (ResponseParserError("invalid XML received: b'<Error>truncated'"), False),
        (TimeoutError("read timed out"), False),
    ],
)
def test_the_fallback_is_chosen_only_when_the_api_is_not_implemented(
    exc: BaseException, fallback: bool
) -> None:
    assert unsupported(exc) is fallback


@pytest.mark.parametrize(
    ("desired", "healthy", "size"), [(3, 66, 1), (3, 0, 3), (4, 50, 2), (1, 100, 1), (10, 90, 1), (10, 70, 3)]
)
def test_a_batch_keeps_the_minimum_healthy_percentage_in_service(
    desired: int, healthy: int, size: int
) -> None:
    assert batch_size(desired, healthy) == size


def test_the_health_gate_is_bounded_before_anything_runs() -> None:
    HealthGate(check="http", url_template="http://{private_ip}:8080/health").check_inputs()
    with pytest.raises(InvalidInput, match="needs url_template"):
        HealthGate(check="both").check_inputs()
    with pytest.raises(InvalidInput, match="only"):
        HealthGate(check="http", url_template="http://{private_ip}/{__class__}").check_inputs()
    with pytest.raises(ValueError, match="pattern"):
        HealthGate(check="http", url_template="file:///etc/passwd")
