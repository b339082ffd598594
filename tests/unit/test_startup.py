"""Flow-run start-up: a flow-run process exits without its final garbage collection (flows/process_exit.py),
and a rollout's import does not pull in Ansible (tasks/preflight.py imports it for a playbook check only)."""

from __future__ import annotations

import subprocess
import sys

from tools.settings import REPO_ROOT


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout.strip()


def test_importing_the_flows_freezes_the_heap_at_exit_once() -> None:
    probe = (
        "import atexit, gc\n"
        "import flows\n"
        "from flows import process_exit\n"
        "print(process_exit.install(), gc.get_freeze_count() == 0)\n"
        "atexit._run_exitfuncs()\n"
        "print(gc.get_freeze_count() > 0)\n"
    )
    assert _python(probe).split() == ["False", "True", "True"]


def test_a_rollout_imports_no_ansible() -> None:
    probe = (
        "import sys\n"
        "import flows.rollout\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ansible', 'ansible_runner')))\n"
    )
    assert _python(probe) == "[]"
