"""Fixtures of the consensus tests."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from .harness import jump_clock


@pytest.fixture
def autojump_clock() -> MockClock:
    return jump_clock()
