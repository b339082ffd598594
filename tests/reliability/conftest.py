"""The reliability suite: real faults, bad inputs, secret hygiene (figures: tests/reliability/figures.py)."""

from __future__ import annotations


def pytest_configure(config) -> None:  # noqa: ANN001
    config.addinivalue_line(
        "markers", "reliability: fault, bad-input and secret-leak suite (tests/reliability)"
    )
