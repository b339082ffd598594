"""The run logger: Prefect's inside a flow or task run, installed once as the tools' logger hook
(`tools.process.use_run_logger`), so tool output streams to the run's logs without tools knowing Prefect.
Flows log through `default_logger` from here, and show text to people through `redact`."""

from __future__ import annotations

import logging

from tools.process import default_logger, use_run_logger
from tools.redact import redact

__all__ = ["default_logger", "prefect_run_logger", "redact"]


def prefect_run_logger() -> logging.Logger | logging.LoggerAdapter | None:
    """Prefect's run logger inside a flow or task run, else None."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging import get_run_logger

    if TaskRunContext.get() or FlowRunContext.get():
        return get_run_logger()
    return None


use_run_logger(prefect_run_logger)
