"""Every log event tuningd emits (daemon and emulator) is named noun.verb, the house rule that
keeps logs greppable: a future `emulator_started` or `jobTransition` fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tuningd"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "msg"}
EVENT = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
# Calls named like log levels that are not log calls (a future's, a task's stored exception).
NOT_LOGGERS = {"future", "task"}


def _log_calls(tree: ast.AST) -> list[ast.Call]:
    """Every `<anything>.<level>(...)` call but those on NOT_LOGGERS receivers: bound loggers
    (`bound.info`), attributes (`self._log.warning`) and chains (`log.bind(...).info`) too."""
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in LEVELS
            and ast.unparse(node.func.value) not in NOT_LOGGERS]


def _events() -> list[tuple[str, int, ast.expr | None]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for call in _log_calls(ast.parse(path.read_text(encoding="utf-8"))):
            found.append((path.relative_to(PACKAGE).as_posix(), call.lineno,
                          call.args[0] if call.args else None))
    return found


def test_every_log_event_is_a_literal_noun_dot_verb() -> None:
    """Each event name passed to a logger in tuningd/ (emulator included) is a string literal
    (so this scan sees it) of the form `noun.verb`."""
    events = _events()
    assert len(events) > 40  # the walk really found the package's log calls
    assert any(path.startswith("emulator/") for path, _, _ in events)
    bad = [f"{path}:{line}: {ast.unparse(arg) if arg is not None else '(no event)'}"
           for path, line, arg in events
           if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                   and EVENT.fullmatch(arg.value))]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source", [
    'log.info("emulator_started", url=u)',
    'self._log.warning("jobTransition")',
    'bound.info("job transition")',
    'log.bind(job_id=j).error(f"job.{kind}")',
])
def test_the_scan_catches_other_styles(source: str) -> None:
    """The scan flags snake_case, camelCase, spaced and computed names wherever the logger is."""
    [call] = _log_calls(ast.parse(source))
    arg = call.args[0]
    assert not (isinstance(arg, ast.Constant) and EVENT.fullmatch(str(arg.value)))
