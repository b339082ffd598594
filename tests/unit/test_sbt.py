"""tools.sbt parsers and file handling (no tools run)."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from tools import sbt
from tools.errors import BuildFailed, InvalidInput


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ('version := "1.0.0"\n', "1.0.0"),
        ('ThisBuild / version := "2.3.4-SNAPSHOT"\n', "2.3.4-SNAPSHOT"),
        ('name := "x"\n  version   :=   "0.1"  \nscalaVersion := "2.12.8"\n', "0.1"),
        ('// version := "9.9.9"\nversion := "1.2"\n', "1.2"),
    ],
)
def test_version_is_read(text, version):
    assert sbt.parse_version(text) == version


def test_scala_version_is_not_a_version():
    with pytest.raises(InvalidInput, match="no version setting"):
        sbt.parse_version('scalaVersion := "2.12.8"\n', source="/w/build.sbt")


def test_several_versions_are_rejected_naming_the_file():
    with pytest.raises(InvalidInput, match=r"/w/build.sbt: 2 version settings"):
        sbt.parse_version('version := "1"\nThisBuild / version := "2"\n', source="/w/build.sbt")


@pytest.mark.parametrize("bad", ["../1", "1/2", "", "-1"])
def test_unsafe_versions_are_rejected(bad):
    with pytest.raises(InvalidInput):
        sbt.parse_version(f'version := "{bad}"\n')


def test_read_project_name_and_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="build.sbt: not found"):
        sbt.read_project(tmp_path)
    (tmp_path / "build.sbt").write_text('name := "hire-help"\nversion := "1.0.0"\n')
    project = sbt.read_project(tmp_path)
    assert (project.name, project.version, project.package) == ("hire-help", "1.0.0", "hire-help-1.0.0")


def test_the_sample_app_parses():
    project = sbt.read_project(Path(__file__).resolve().parents[2] / "infra" / "apps" / "hire-help")
    assert project.package == "hire-help-1.0.0"


def _project(tmp_path: Path) -> sbt.SbtProject:
    return sbt.SbtProject("app", "1.0", tmp_path / "build.sbt")


def test_clean_removes_package_and_target_only(tmp_path):
    (tmp_path / "app-1.0" / "bin").mkdir(parents=True)
    (tmp_path / "target" / "universal").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    removed = sbt.clean_artifacts(tmp_path, _project(tmp_path))
    assert sorted(p.name for p in removed) == ["app-1.0", "target"]
    assert (tmp_path / "src").is_dir() and not (tmp_path / "target").exists()


def test_clean_never_follows_a_link_outside(tmp_path):
    outside = tmp_path / "outside"
    (outside / "precious").mkdir(parents=True)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "target").symlink_to(outside)
    sbt.clean_artifacts(ws, _project(ws))
    assert not (ws / "target").exists() and (outside / "precious").is_dir()


def _zip(path: Path, entries: dict[str, bytes], mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_unzip_rejects_entries_escaping_the_destination(tmp_path, evil):
    archive = _zip(tmp_path / "x.zip", {"ok/file": b"1", evil: b"2"})
    dest = tmp_path / "dest"
    with pytest.raises(InvalidInput, match="escapes the destination"):
        sbt.safe_unzip(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "ok" / "file").exists()  # validated before anything is written


def test_unzip_rejects_symlink_entries(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"app/link": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777)
    with pytest.raises(InvalidInput, match="symbolic link"):
        sbt.safe_unzip(archive, tmp_path / "dest")


def test_unzip_keeps_the_executable_bit(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"app-1.0/bin/start.sh": b"#!/bin/sh\n"}, mode=stat.S_IFREG | 0o755)
    written = sbt.safe_unzip(archive, tmp_path / "dest")
    assert written == [tmp_path / "dest" / "app-1.0" / "bin" / "start.sh"]
    assert os.stat(written[0]).st_mode & 0o777 == 0o755


def test_unzip_rejects_a_non_zip(tmp_path):
    (tmp_path / "x.zip").write_text("not a zip")
    with pytest.raises(InvalidInput, match="not a zip"):
        sbt.safe_unzip(tmp_path / "x.zip", tmp_path / "dest")


def test_missing_package_says_what_the_build_produced(tmp_path):
    (tmp_path / "target" / "universal").mkdir(parents=True)
    (tmp_path / "target" / "universal" / "other.zip").write_text("")
    with pytest.raises(BuildFailed, match="produced no") as caught:
        sbt.package_zip(tmp_path, _project(tmp_path))
    assert "other.zip" in str(caught.value)


def test_builder_container_spec(tmp_path):
    spec = sbt.BuildSpec(
        image="b:1", env={"A": "1"}, secret_env={"PW": "secret-value"}, cpus=1.5, memory="1g"
    )
    run = sbt.builder_run(tmp_path, spec)
    kwargs = run.kwargs()
    assert kwargs["nano_cpus"] == 1_500_000_000 and kwargs["mem_limit"] == "1g"
    assert kwargs["volumes"][str(tmp_path.resolve())] == {"bind": "/src", "mode": "rw"}
    assert {v["bind"] for v in kwargs["volumes"].values()} == {"/src", sbt.IVY_PATH, sbt.COURSIER_PATH}
    assert kwargs["command"] == ["sh", "-c", "cd /src && ./build.sh"]
    assert "secret-value" not in run.describe() and "PW" in run.describe()
