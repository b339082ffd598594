"""The instance refresh request sent to AWS, when the fallback is chosen, and the batch arithmetic."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError
from botocore.stub import Stubber

from tasks.instance_refresh import HealthGate
from tools import instance_refresh as refresh
from tools.errors import AwsError, InvalidInput
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


def _stubbed_autoscaling(running: list[dict]) -> tuple[object, Stubber]:
    """A real boto3 client whose answers are botocore's Stubber: AWS's instance refresh API cannot be
    produced here (moto does not implement it)."""
    client = boto3.client(
        "autoscaling", region_name="eu-central-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    stubber.add_client_error(
        "start_instance_refresh", "InstanceRefreshInProgress", "An Instance Refresh is already in progress"
    )
    stubber.add_response(
        "describe_instance_refreshes", {"InstanceRefreshes": running}, {"AutoScalingGroupName": "g"}
    )
    stubber.activate()
    return client, stubber


def _running(status: str, version: str) -> dict:
    return {
        "InstanceRefreshId": "r-1",
        "AutoScalingGroupName": "g",
        "Status": status,
        "DesiredConfiguration": {"LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": version}},
    }


def test_a_rerun_follows_the_refresh_a_cancelled_run_left_running_to_the_same_version() -> None:
    client, stubber = _stubbed_autoscaling([_running("InProgress", "3")])
    assert refresh.start(client, refresh_request("g", "lt-1", "3", Preferences())) == "r-1"
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("status", "version"), [("InProgress", "2"), ("Cancelling", "3"), ("Successful", "3")]
)
def test_a_running_refresh_to_another_version_or_being_cancelled_keeps_aws_error(
    status: str, version: str
) -> None:
    client, _ = _stubbed_autoscaling([_running(status, version)])
    with pytest.raises(AwsError, match="InstanceRefreshInProgress"):
        refresh.start(client, refresh_request("g", "lt-1", "3", Preferences()))
