"""The dependency rule of design §10: a pure core, adapters around it, one composition root."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tuningd"

CORE = {"model", "models", "wire", "machine", "policy", "recovery", "settings", "budget", "config",
        "config_values", "config_ha", "errors", "codec", "wire_json", "validation", "listfilter",
        "vertex_schema", "vertex_schema_common", "vertex_schema_v1", "vertex_schema_v1beta1",
        "vertex_schema_extra", "ports"}
# Adapters may use the core (and auth, for the Vertex client's token source), never the
# engine, the API or the composition root.
ADAPTERS = {"store", "store_files", "store_schema", "store_open", "store_rows", "store_reads",
            "store_tools", "vertex", "auth", "metrics", "notify", "log", "failpoints",
            "secret_files", "store_memory", "store_pushdown"}
# The Vertex wire code the emulator shares (schema, codec, validation, filters, paging): it knows
# Vertex's JobState, never the daemon's LocalState (push-down to local states is the store's).
WIRE = {"wire", "codec", "validation", "wire_json", "listfilter", "models", "errors",
        "vertex_schema", "vertex_schema_common", "vertex_schema_v1", "vertex_schema_v1beta1",
        "vertex_schema_extra"}
# HTTP plumbing the daemon's API and the emulator share (aiohttp over the core, nothing else).
SHARED_HTTP = {"http_envelope"}
# The store's own parts, which only the store's modules use among themselves.
STORE_PARTS = {"store_files", "store_schema", "store_open", "store_rows", "store_reads"}
# The concrete job stores and Vertex client: everything else reaches them through tuningd.ports.
CONCRETE_PORTS = {"store", "store_memory", "vertex"} | STORE_PARTS
# Modules that may name a concrete store or Vertex client: the adapters' own families (the
# store's parts, its maintenance tool) and the composition root that wires them.
MAY_NAME_CONCRETE = {"store", "store_tools", "store_memory", "vertex"} | STORE_PARTS
COMPOSITION = {"app", "cli"}
# Modules of the core that may do I/O-free work only: no event loop, no sockets, no files
# other than config's one TOML read.
FORBIDDEN_IN_CORE = {"asyncio", "aiohttp", "aiosqlite", "socket", "sqlite3", "structlog",
                     "prometheus_client", "logging", "subprocess", "threading"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts)


def _imports(path: Path) -> set[str]:
    """Every module imported by a file, absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "tuningd":
                found.update(f"tuningd.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def _tuningd_deps(path: Path) -> set[str]:
    """The first-level tuningd modules a file depends on ("emulator" for the subpackage)."""
    deps = set()
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "tuningd" and len(parts) > 1:
            deps.add(parts[1])
    return deps


@pytest.mark.parametrize("name", sorted(CORE))
def test_core_imports_only_stdlib_and_core(name: str) -> None:
    """Core modules import the standard library and other core modules only."""
    path = PACKAGE / f"{name}.py"
    for imported in _imports(path):
        top = imported.split(".")[0]
        if top == "tuningd":
            dep = imported.split(".")[1] if "." in imported else ""
            assert dep in CORE, f"{name} imports {imported}"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", \
                f"{name} imports third-party {imported}"
            assert top not in FORBIDDEN_IN_CORE, f"{name} imports {imported}"


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapters_never_import_engine_api_or_app(name: str) -> None:
    """Adapters depend on the core (and vertex on auth), never on the engine, API or app."""
    deps = _tuningd_deps(PACKAGE / f"{name}.py") - {"__version__"}
    allowed = CORE | {"auth", "failpoints"} | (STORE_PARTS if name.startswith("store") else set())
    assert deps <= allowed, f"{name} depends on {sorted(deps - allowed)}"


def test_only_the_composition_root_imports_everything() -> None:
    """No module but cli imports app, and nothing outside app/cli imports the emulator."""
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        short = module.split(".")[1] if module.count(".") else module
        deps = _tuningd_deps(path)
        if short not in COMPOSITION:
            assert "app" not in deps, f"{module} imports tuningd.app"
        if short not in COMPOSITION and short != "emulator":
            assert "emulator" not in deps, f"{module} imports the emulator"


def test_emulator_uses_only_the_core() -> None:
    """The emulator is built on the wire codec, core values and the shared HTTP plumbing only."""
    allowed = CORE | SHARED_HTTP
    for path in (PACKAGE / "emulator").glob("*.py"):
        deps = _tuningd_deps(path) - {"emulator", "__version__"}
        assert deps <= allowed, f"{path.name} depends on {sorted(deps - allowed)}"


def test_engine_and_api_reach_store_and_vertex_only_through_ports() -> None:
    """Outside the adapters and the composition root, no module imports a concrete store or
    Vertex client: the engine, its parts and the API are typed against tuningd.ports."""
    for path in PACKAGE.glob("*.py"):
        name = path.stem
        if name in MAY_NAME_CONCRETE | COMPOSITION:
            continue
        concrete = _tuningd_deps(path) & CONCRETE_PORTS
        assert not concrete, f"{name} imports {sorted(concrete)}; use tuningd.ports"


def test_the_engine_and_api_modules_use_the_ports() -> None:
    """The engine, ledger, actions and pass-through name the ports (so the rule above bites)."""
    for name in ("engine", "ledger", "actions", "sweep", "passthrough"):
        assert "ports" in _tuningd_deps(PACKAGE / f"{name}.py"), f"{name} does not use ports"


@pytest.mark.parametrize("name", sorted(WIRE))
def test_wire_code_knows_no_daemon_state(name: str) -> None:
    """The wire modules the emulator shares depend on each other only, not on model's states."""
    deps = _tuningd_deps(PACKAGE / f"{name}.py")
    assert deps <= WIRE, f"{name} depends on {sorted(deps - WIRE)}"


@pytest.mark.parametrize("name", sorted(SHARED_HTTP))
def test_shared_http_depends_on_the_core_only(name: str) -> None:
    """The HTTP plumbing shared with the emulator knows nothing of the daemon beyond the core."""
    deps = _tuningd_deps(PACKAGE / f"{name}.py")
    assert deps <= CORE, f"{name} depends on {sorted(deps - CORE)}"


def test_http_helpers_are_defined_once() -> None:
    """JSON answers, the envelope answer and the request-line limit live in one shared module."""
    shared = ("def json_response(", "def error_response(", "def _error_response(",
              "JSON_CONTENT_TYPE =", "MAX_REQUEST_LINE_BYTES =", "def malformed_request(")
    for path in PACKAGE.rglob("*.py"):
        if path.stem in SHARED_HTTP:
            continue
        text = path.read_text(encoding="utf-8")
        for needle in shared:
            assert needle not in text, f"{_module_name(path)} defines {needle!r} again"
