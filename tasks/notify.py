"""One way to notify people: through a notification block, for drift, an app that is down and a plan
waiting for approval.

`block_ref` is the name of a custom-webhook block (as bootstrap saves NOTIFY_BLOCK) or 'type-slug/name'
for any other notification block (e.g. slack-webhook/x). A block that does not exist is logged and
nothing is sent. A block that fails to deliver raises NotificationFailed, whose message never holds the
webhook's URL (httpx errors do: they are not re-raised)."""

from __future__ import annotations

from prefect import task
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.cache_policies import NO_CACHE

from tools.errors import NotificationFailed
from tools.process import default_logger
from tools.redact import redact


@task(name="notify", cache_policy=NO_CACHE, task_run_name="notify: {what}")
def notify(block_ref: str, what: str, subject: str, body: str) -> bool:
    """Send `subject` and `body` (redacted) through the block; False when the block does not exist."""
    logger = default_logger()
    try:
        block = Block.load(block_ref) if "/" in block_ref else CustomWebhookNotificationBlock.load(block_ref)
    except ValueError as exc:
        logger.warning("no %s notification sent: block %r could not be loaded (%s)", what, block_ref, exc)
        return False
    from blocks import register_notification_secrets

    register_notification_secrets(block)
    try:
        block.notify(body=redact(body), subject=subject)
    except Exception as exc:  # noqa: BLE001 - httpx/validation errors carry the URL: never re-raise them
        status = getattr(getattr(exc, "response", None), "status_code", None)
        reason = f"HTTP {status}" if status else type(exc).__name__
        raise NotificationFailed(
            f"{what} notification through block {block_ref!r} failed: {reason}", transient=status is None
        ) from None
    logger.info("%s notification sent through %s", what, block_ref)
    return True
