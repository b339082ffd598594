"""The Prefect tasks. Importing the package installs Prefect's run logger as the tools' logger hook
(tasks/logs.py); it changes nothing in Prefect itself (the engine fix is applied by flows/engine.py)."""

from tasks import logs as _logs  # noqa: F401 - installs the run-logger hook
