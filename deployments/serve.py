"""Serve every deployment of prefect.yaml from this one process, on its schedules: no work pool needed.

    python -m deployments.serve [--only NAME ...]

`pause_on_shutdown=False`: stopping this process must not pause the schedules (PITFALLS.md).
"""

from __future__ import annotations

import argparse
import os
import sys

from deployments.declarations import load
from tools.settings import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="serve only this deployment (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many concurrent flow runs")
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    declarations = [d for d in load().deployments if not args.only or d.name in args.only]
    if not declarations:
        print("no deployment matches", file=sys.stderr)  # noqa: T201 - a command's output
        return 2
    from prefect import serve

    serve(*[d.to_deployment() for d in declarations], pause_on_shutdown=False, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
