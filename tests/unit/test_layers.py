"""The layers, checked over the source files with `ast`: tools/ wrap external tools and know no Prefect;
flows/ compose tasks and take nothing from tools/ but the error tree; the product never imports the
development environment (devenv/); importing tasks changes nothing in Prefect's engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tools.settings import REPO_ROOT

PRODUCT = ("tools", "tasks", "flows", "blocks", "deployments")


def sources(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def imported(path: Path) -> list[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def top(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_layers_have_sources() -> None:
    for package in (*PRODUCT, "devenv"):
        assert sources(package), package


@pytest.mark.parametrize("path", sources("tools"), ids=lambda p: p.name)
def test_tools_import_no_prefect_and_no_upper_layer(path: Path) -> None:
    bad = [
        name
        for name in imported(path)
        if top(name) == "prefect"
        or top(name).startswith("prefect_")
        or top(name) in {*PRODUCT, "devenv"} - {"tools"}
    ]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(set(bad))}"


@pytest.mark.parametrize("path", sources("flows"), ids=lambda p: p.name)
def test_flows_take_only_the_error_tree_from_tools(path: Path) -> None:
    bad = [
        name
        for name in imported(path)
        if top(name) == "tools" and name != "tools.errors" and not name.startswith("tools.errors.")
    ]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(set(bad))}"


@pytest.mark.parametrize("package", PRODUCT)
def test_the_product_never_imports_the_development_environment(package: str) -> None:
    bad = {
        str(p.relative_to(REPO_ROOT))
        for p in sources(package)
        if any(top(n) == "devenv" for n in imported(p))
    }
    assert not bad, bad


@pytest.mark.parametrize("package", PRODUCT)
def test_the_product_never_imports_the_runners_test_seam(package: str) -> None:
    bad = {str(p.relative_to(REPO_ROOT)) for p in sources(package) if "tools.process_fake" in imported(p)}
    assert not bad - {"tools/process_fake.py"}, bad


def test_the_rules_see_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from prefect.logging import get_run_logger\nfrom tools import packer\n")
    assert {"prefect.logging", "tools", "tools.packer"} <= set(imported(sample))


def test_importing_tasks_leaves_the_engine_alone_and_importing_flows_fixes_it() -> None:
    probe = (
        "import tasks, prefect.flow_engine as e\n"
        "print(getattr(e._send_heartbeats, 'devops_flows_unjoined', False))\n"
        "import flows\n"
        "print(getattr(e._send_heartbeats, 'devops_flows_unjoined', False), flows.HEARTBEAT_JOIN_PATCHED)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr
