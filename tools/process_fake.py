"""A seam for fast unit tests of what tasks and tool wrappers decide from a tool's output: within
`scripted(...)`, the process runner (tools/process.py) starts no process and answers each command with
the first `Answer` whose words all appear in its argv (exit code, stdout and stderr lines), fed through
the same output sink, line handler and error mapping as a real run. Product code never uses it.

    with scripted(Answer(("plan",), exit_code=2)) as calls:
        assert tf.plan(runner) is True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tools import process

__all__ = ["Answer", "scripted"]


@dataclass(frozen=True)
class Answer:
    words: Sequence[str]  # every one appears in argv (e.g. ("terraform", "plan"))
    exit_code: int = 0
    stdout: Sequence[str] = ()
    stderr: Sequence[str] = ()


@contextmanager
def scripted(*answers: Answer) -> Iterator[list[list[str]]]:
    """Answer the runner's commands from `answers`; yields the argv of every command asked, in order.
    A command no answer matches fails the test (AssertionError)."""
    calls: list[list[str]] = []

    def answer(argv: list[str]) -> tuple[int, list[tuple[str, str]]]:
        calls.append(argv)
        words = {word for arg in argv for word in (arg, arg.rsplit("/", 1)[-1])}
        for scripted_answer in answers:
            if all(word in words for word in scripted_answer.words):
                lines = [("stdout", line) for line in scripted_answer.stdout]
                return scripted_answer.exit_code, [
                    *lines,
                    *(("stderr", line) for line in scripted_answer.stderr),
                ]
        raise AssertionError(f"no scripted answer for {argv}")

    previous, process._fake = process._fake, answer
    try:
        yield calls
    finally:
        process._fake = previous
