"""Every log event tuningd emits is named noun.verb (the house rule that keeps logs greppable)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tuningd"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "msg"}
EVENT = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")


def _events() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS and isinstance(node.func.value, ast.Name)
                    and node.func.value.id.endswith("log") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                found.append((path.relative_to(PACKAGE).as_posix(), node.lineno,
                              node.args[0].value))
    return found


def test_every_log_event_is_noun_dot_verb() -> None:
    """Each literal event name passed to a structlog logger in tuningd/ is `noun.verb`."""
    events = _events()
    assert len(events) > 40  # the walk really found the package's log calls
    bad = [f"{path}:{line}: {name!r}" for path, line, name in events
           if not EVENT.fullmatch(name)]
    assert not bad, "\n".join(bad)
