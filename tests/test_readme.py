"""The README's two commands stay the ones CI and a new user run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text)[:2]


def test_readme_opens_with_run_and_test_commands() -> None:
    """The first two shell blocks are one line each: run on the emulator, then install and test."""
    run, test = _readme_commands()
    assert "tuningd serve --emulator" in run and "pip install ." in run
    assert "pip install '.[test]'" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run executes exactly the README's test command."""
    _, test = _readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test in ci_lines
