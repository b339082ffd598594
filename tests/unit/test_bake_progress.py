"""The bake's progress artifact follows Packer's steps but is written at most every PROGRESS_EVERY_SECONDS
(each write is an API call; Packer prints a line per step), and always once at the end. The artifact
calls are spied on (no server needed); the clock is the test's."""

from __future__ import annotations

import pytest

from tasks import packer as bake_tasks


@pytest.fixture
def writes(monkeypatch) -> list[float]:
    written: list[float] = []
    monkeypatch.setattr(bake_tasks, "create_progress_artifact", lambda **_: "artifact-id")
    monkeypatch.setattr(
        bake_tasks, "update_progress_artifact", lambda artifact_id, progress: written.append(progress)
    )
    return written


def test_progress_is_throttled_and_always_finishes(monkeypatch, writes):
    now = [100.0]
    monkeypatch.setattr(bake_tasks.time, "monotonic", lambda: now[0])
    progress = bake_tasks._BakeProgress("xwiki")
    for percent in (5.0, 10.0, 20.0, 30.0):  # a burst of steps within a second: nothing written yet
        now[0] += 0.2
        progress.update(percent)
    assert writes == []
    now[0] += bake_tasks.PROGRESS_EVERY_SECONDS
    progress.update(35.0)
    assert writes == [35.0]
    progress.update(20.0)  # never backwards
    now[0] += bake_tasks.PROGRESS_EVERY_SECONDS
    progress.update(30.0)
    assert writes == [35.0]
    progress.finish()
    assert writes == [35.0, 100.0]
