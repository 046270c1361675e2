"""The project rule that each test says in one docstring sentence what behaviour it checks."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _test_files() -> list[Path]:
    """The files pytest collects tests from under tests/ (its default python_files patterns)."""
    return sorted({*TESTS.rglob("test_*.py"), *TESTS.rglob("*_test.py")})


def _undocumented(source: str) -> tuple[int, list[str]]:
    """How many test functions a module defines, and `line:name` of each without a docstring."""
    found, missing = 0, []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            found += 1
            if not (ast.get_docstring(node) or "").strip():
                missing.append(f"{node.lineno}:{node.name}")
    return found, missing


def test_every_test_function_has_a_docstring() -> None:
    """Every test function under tests/, methods of test classes included, has a non-empty
    docstring; the failure names each one that does not."""
    found, missing = 0, []
    for path in _test_files():
        count, names = _undocumented(path.read_text(encoding="utf-8"))
        found += count
        missing += [f"{path.relative_to(TESTS.parent)}:{name}" for name in names]
    assert found > 100, "the scan found almost no tests: is TESTS the tests/ directory?"
    assert missing == [], "test functions without a docstring:\n" + "\n".join(missing)


def test_the_scan_finds_undocumented_functions_and_methods() -> None:
    """The scan flags undocumented test functions, async tests and test methods, and passes
    documented ones, blank docstrings counting as none."""
    source = '''
def test_a():
    """Documented."""
def test_b():
    pass
async def test_c():
    x = 1
def test_d():
    """ """
class TestE:
    def test_f(self):
        """Documented."""
    def test_g(self):
        # a comment is not a docstring
        pass
def helper():
    pass
'''
    assert _undocumented(source) == (6, ["4:test_b", "6:test_c", "8:test_d", "13:test_g"])
