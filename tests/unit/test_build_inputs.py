"""The build-inputs digest: what a build reads changes it, what a build writes does not."""

from __future__ import annotations

from pathlib import Path

from tools.build_inputs import digest, input_files, inputs_tag

FACTS = {
    "builder_image": "sha256:b",
    "build_command": '["./build.sh"]',
    "build_env": {},
    "base_image": "sha256:a",
}


def _app(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "build.sbt").write_text('name := "hire-help"\nversion := "1.0.0"\n')
    (root / "build.sh").write_text("#!/bin/sh\nsbt dist\n")
    (root / "build.sh").chmod(0o755)
    (root / "src" / "App.scala").write_text("object App\n")
    (root / "Dockerfile").write_text("FROM scratch\n")
    return root


def test_only_what_the_build_reads_counts(tmp_path: Path) -> None:
    app = _app(tmp_path / "app")
    first = digest(app, FACTS, skip=["hire-help-1.0.0"])
    assert first == digest(app, dict(reversed(FACTS.items())), skip=["hire-help-1.0.0"])  # order-free
    # what the build writes, and version-control data, are not inputs
    for written in ("target/universal/hire-help-1.0.0.zip", "hire-help-1.0.0/bin/start.sh", ".git/HEAD"):
        (app / written).parent.mkdir(parents=True, exist_ok=True)
        (app / written).write_text("x")
    assert digest(app, FACTS, skip=["hire-help-1.0.0"]) == first
    assert [p.relative_to(app).as_posix() for p in input_files(app, ["hire-help-1.0.0"])] == [
        "Dockerfile",
        "build.sbt",
        "build.sh",
        "src/App.scala",
    ]
    # a source, a mode, a new file, a builder image or a build environment: another digest
    (app / "src" / "App.scala").write_text("object App { }\n")
    changed = digest(app, FACTS, skip=["hire-help-1.0.0"])
    assert changed != first
    (app / "build.sh").chmod(0o644)
    assert digest(app, FACTS, skip=["hire-help-1.0.0"]) != changed
    (app / "src" / "target").mkdir()  # a nested target/ is the build's too
    assert digest(app, {**FACTS, "builder_image": "sha256:c"}, skip=["hire-help-1.0.0"]) != changed
    assert digest(app, {**FACTS, "build_env": {"X": "1"}}, skip=["hire-help-1.0.0"]) != changed


def test_the_tag_is_a_valid_docker_tag() -> None:
    tag = inputs_tag("ab" * 32)
    assert tag == "inputs-" + "ab" * 20 and len(tag) <= 128
