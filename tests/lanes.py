"""Which lane a test runs in: markers (registered in pyproject.toml) say what a test needs
beyond Python, and `scripts/test.sh --fast` leaves out

    -m "not (browser or turn or speech or ray or netns or slow)"

Whatever starts coturn, Chromium or espeak-ng calls `require_marker`, so a test that needs one
and is not marked fails saying so instead of slipping into the fast lane."""

from __future__ import annotations

import pytest

running: list[pytest.Item] = []
"""The test being set up or run (tests/conftest.py sets it before any of its fixtures)."""


def require_marker(marker: str, what: str) -> None:
    """Fails the running test unless it is marked `marker`: it starts `what`."""
    if running and running[0].get_closest_marker(marker) is None:
        pytest.fail(f"{running[0].nodeid} starts {what}: mark it `{marker}`", pytrace=False)
