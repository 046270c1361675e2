"""asyncpg is an optional extra: without it tuningd runs on SQLite and says how to get it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tuningd"
# Importing a module set to None in sys.modules raises ImportError, as if it were not installed.
WITHOUT_ASYNCPG = "import sys; sys.modules['asyncpg'] = None\n"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_ASYNCPG + code], capture_output=True,
                          text=True, timeout=60, check=False)


def _imports_asyncpg(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(
                a.name.split(".")[0] == "asyncpg" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "asyncpg":
            return True
    return False


def test_only_the_postgres_adapter_imports_asyncpg() -> None:
    """No module outside tuningd/adapters/postgres/ imports asyncpg."""
    for path in PACKAGE.rglob("*.py"):
        if "postgres" not in path.relative_to(PACKAGE).parts:
            assert not _imports_asyncpg(path), f"{path} imports asyncpg"
    assert _imports_asyncpg(PACKAGE / "adapters" / "postgres" / "store.py")


def test_daemon_and_cli_load_without_asyncpg() -> None:
    """The composition root, the CLI's parser and the SQLite store load with no asyncpg."""
    result = _run("import tuningd.app, tuningd.cli\ntuningd.cli.build_parser()\n")
    assert result.returncode == 0, result.stderr


def test_postgres_url_without_asyncpg_says_what_to_install() -> None:
    """A postgresql:// store without asyncpg is a ConfigError naming the extra to install."""
    result = _run(
        "import asyncio\n"
        "from tuningd.adapters.stores import open_postgres\n"
        "from tuningd.core.errors import ConfigError\n"
        "try:\n"
        "    asyncio.run(open_postgres('postgresql://u:pw@db/x'))\n"
        "except ConfigError as exc:\n"
        "    print(exc.message)\n")
    assert result.returncode == 0, result.stderr
    assert "pip install 'tuningd[postgres]'" in result.stdout
    assert "postgresql://u:***@db/x" in result.stdout
