"""Shared fixtures of the acceptance tests: the process set every daemon scenario runs in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Processes, processes


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Emulator and daemon processes started by a test, all killed at teardown."""
    with processes(tmp_path) as p:
        yield p
