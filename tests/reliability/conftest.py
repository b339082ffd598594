"""Fixtures shared by the container reliability tests (defined in tests/reliability/apps.py); a module's
own fixture of the same name (test_faults.py's `app`) overrides them."""

from tests.reliability.apps import app, images  # noqa: F401 - fixtures
