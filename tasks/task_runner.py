"""The task runner of our flows: Prefect's thread pool, plus a stop for the tools of submitted tasks.

When a flow run is cancelled, Prefect raises TerminationSignal in the flow's main thread. A tool started
there is stopped by the process runner at once; a tool started by a submitted task runs in a pool thread,
and the pool's exit would wait for it to finish on its own. On an exit by exception, this runner first asks
the tools its threads run to stop by their own protocol (one SIGINT to Terraform...), then waits as usual.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from tools.process import default_logger, stop_runs_in


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
