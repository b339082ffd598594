"""The reliability suite: faults produced for real, bad inputs, secret hygiene (see tests/reliability/figures.py)."""

from __future__ import annotations


def pytest_configure(config) -> None:  # noqa: ANN001
    config.addinivalue_line("markers", "reliability: fault, bad-input and secret-leak suite (tests/reliability)")
