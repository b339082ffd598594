"""The task runner of our flows: Prefect's thread pool, plus a stop for the tools of submitted tasks.

When a flow run is cancelled, Prefect raises TerminationSignal in the flow's main thread. A tool started
there is stopped by the process runner at once; a tool started by a submitted task runs in a pool thread,
and the pool's exit would wait for it to finish on its own. On an exit by exception, this runner first asks
the tools its threads run to stop by their own protocol (one SIGINT to Terraform...), then waits as usual.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.task_runners import ThreadPoolTaskRunner

from tools.errors import ProcessCancelled
from tools.process import default_logger, stop_runs_in


def is_cancel(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is the run being cancelled or the process being told to stop:
    Prefect's TerminationSignal, a KeyboardInterrupt, or a tool we stopped for that reason. Nothing may
    start a change after it (no rollback apply in a process about to be killed): the rerun finishes."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (TerminationSignal, KeyboardInterrupt, ProcessCancelled)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def cancelling() -> bool:
    """Whether the exception being handled right now (e.g. in a transaction's rollback hook) is a cancel."""
    return is_cancel(sys.exc_info()[1])


class StoppingThreadPoolTaskRunner(ThreadPoolTaskRunner):
    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and self._executor is not None:
            threads = [t.ident for t in list(getattr(self._executor, "_threads", ())) if t.ident]
            asked = stop_runs_in(threads)
            if asked:
                default_logger().warning(
                    "%s: stopping the tools of %d running task(s)", exc_type.__name__, asked
                )
        super().__exit__(exc_type, exc_value, traceback)
