"""The dependency rules of the layout: a pure core, the Vertex wire, ports, adapters, the service,
the HTTP adapter and one composition root, each import running one way only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tuningd"

# Modules of the pure core and the wire may do I/O-free work only: no event loop, no sockets, no
# files other than config's one TOML read.
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "aiosqlite", "asyncpg", "socket", "sqlite3",
                     "structlog", "prometheus_client", "logging", "subprocess", "threading"}
# Settings are read by config (one type per concern) and used as they are by the core.
SETTINGS = {"tuningd.config", "tuningd.config_values", "tuningd.config_ha"}
# The concrete job stores and Vertex client: everything but the adapters themselves and the
# composition root reaches them through tuningd.ports.
CONCRETE = ("tuningd.adapters.sqlite", "tuningd.adapters.memory", "tuningd.adapters.postgres",
            "tuningd.adapters.vertex_http", "tuningd.adapters.google_auth")
COMPOSITION = {"tuningd.app", "tuningd.cli", "tuningd.serve"}
# HTTP plumbing the daemon's API and the emulator share (aiohttp over the core, nothing else).
SHARED_HTTP = {"tuningd.http.envelope"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _resolve(name: str) -> str:
    """The tuningd module an import names (`from tuningd.core import errors` -> core.errors)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return name


def _imports(path: Path) -> set[str]:
    """Every module a file imports, with `from package import module` resolved to the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module.split(".")[0] == "tuningd":
                found.update(_resolve(f"{node.module}.{alias.name}") for alias in node.names)
            else:
                found.add(node.module)
    return found


def _deps(module: str) -> set[str]:
    """The tuningd modules a module imports (not the package's own __version__)."""
    return {d for d in _imports(MODULES[module])
            if d.split(".")[0] == "tuningd" and d != "tuningd"}


def _of(*packages: str) -> list[str]:
    return [m for m in MODULES if _in(m, *packages)]


@pytest.mark.parametrize("module", _of("tuningd.core", "tuningd.vertex", "tuningd.ports",
                                       "tuningd.config", "tuningd.config_values"))
def test_the_pure_layer_imports_only_stdlib_and_itself(module: str) -> None:
    """The core, the wire, the ports and config import the standard library and each other."""
    for imported in _imports(MODULES[module]):
        top = imported.split(".")[0]
        if top == "tuningd":
            assert _in(imported, "tuningd.core", "tuningd.vertex", "tuningd.ports") \
                or imported in SETTINGS, f"{module} imports {imported}"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", \
                f"{module} imports third-party {imported}"
            assert top not in FORBIDDEN_IN_PURE, f"{module} imports {imported}"


@pytest.mark.parametrize("module", _of("tuningd.vertex"))
def test_wire_code_knows_no_daemon_state(module: str) -> None:
    """The wire the emulator shares uses itself and the error root only, not the daemon's
    LocalState (push-down to local states is the store's: adapters.pushdown)."""
    outside = {d for d in _deps(module) if not _in(d, "tuningd.vertex")} - {"tuningd.core.errors"}
    assert not outside, f"{module} depends on {sorted(outside)}"


@pytest.mark.parametrize("module", _of("tuningd.adapters"))
def test_adapters_never_import_the_service_http_or_app(module: str) -> None:
    """Adapters depend on the core, the wire, the ports and each other, never on the service,
    the HTTP adapter, the emulator or the composition root."""
    bad = {d for d in _deps(module)
           if _in(d, "tuningd.service", "tuningd.http", "tuningd.emulator") or d in COMPOSITION}
    assert not bad, f"{module} depends on {sorted(bad)}"


# Beside the SQLite store: the PostgreSQL store shares its row mapping and its standard-SQL
# queries (reads, rows, schema); the store opener, `migrate` and `store copy` open SQLite files.
SQLITE_NEIGHBOURS = ("tuningd.adapters.postgres", "tuningd.adapters.stores",
                     "tuningd.adapters.store_commands", "tuningd.adapters.store_copy")


@pytest.mark.parametrize("module", _of("tuningd.adapters.sqlite"))
def test_the_sqlite_parts_are_the_sqlite_stores_own(module: str) -> None:
    """Only the SQLite store's modules, its neighbours and the composition root use its parts."""
    for other in MODULES:
        if _in(other, "tuningd.adapters.sqlite", *SQLITE_NEIGHBOURS) or other in COMPOSITION:
            continue
        assert module not in _deps(other), f"{other} imports {module}"


@pytest.mark.parametrize("module", [m for m in MODULES if not _in(m, "tuningd.adapters")
                                    and m not in COMPOSITION])
def test_outside_adapters_stores_and_vertex_are_reached_through_ports(module: str) -> None:
    """The service, the HTTP adapter, the core and the emulator never import a concrete store,
    Vertex client or token source: they are typed against tuningd.ports."""
    concrete = {d for d in _deps(module) if _in(d, *CONCRETE)}
    assert not concrete, f"{module} imports {sorted(concrete)}; use tuningd.ports"


def test_the_service_modules_use_the_ports() -> None:
    """The engine, ledger, actions and sweep name the ports (so the rule above bites)."""
    for name in ("engine", "ledger", "actions", "sweep"):
        assert "tuningd.ports" in _deps(f"tuningd.service.{name}"), f"{name} does not use ports"
    assert "tuningd.ports" in _deps("tuningd.http.passthrough")


def test_only_the_composition_root_imports_app_and_the_emulator() -> None:
    """No module but cli and serve imports app, and nothing outside the composition root (app,
    serve, cli) imports the emulator."""
    for module in MODULES:
        deps = _deps(module)
        if module not in COMPOSITION:
            assert "tuningd.app" not in deps, f"{module} imports tuningd.app"
        if module not in COMPOSITION and not _in(module, "tuningd.emulator"):
            assert not any(_in(d, "tuningd.emulator") for d in deps), \
                f"{module} imports the emulator"


@pytest.mark.parametrize("module", _of("tuningd.emulator"))
def test_emulator_uses_only_the_core_the_wire_and_shared_http(module: str) -> None:
    """The emulator is built on the wire codec, core values and the shared HTTP plumbing only."""
    bad = {d for d in _deps(module) if not _in(d, "tuningd.emulator", "tuningd.core",
                                                "tuningd.vertex") and d not in SHARED_HTTP}
    assert not bad, f"{module} depends on {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(SHARED_HTTP))
def test_shared_http_depends_on_the_core_only(module: str) -> None:
    """The HTTP plumbing shared with the emulator knows nothing of the daemon beyond the core."""
    bad = {d for d in _deps(module) if not _in(d, "tuningd.core", "tuningd.vertex")}
    assert not bad, f"{module} depends on {sorted(bad)}"


def test_http_helpers_are_defined_once() -> None:
    """JSON answers, the envelope answer and the request-line limit live in one shared module."""
    shared = ("def json_response(", "def error_response(", "def _error_response(",
              "JSON_CONTENT_TYPE =", "MAX_REQUEST_LINE_BYTES =", "def malformed_request(")
    for module, path in MODULES.items():
        if module in SHARED_HTTP:
            continue
        text = path.read_text(encoding="utf-8")
        for needle in shared:
            assert needle not in text, f"{module} defines {needle!r} again"


def test_every_module_is_in_a_room() -> None:
    """Besides the composition root, config and the ports, every module lives in a package
    named for its layer (core, vertex, adapters, service, http, emulator, the CLI's client)."""
    top = {m for m in MODULES if m.count(".") == 1}
    rooms = {"tuningd.core", "tuningd.vertex", "tuningd.adapters", "tuningd.service",
             "tuningd.http", "tuningd.emulator", "tuningd.client"}
    assert top - rooms <= {"tuningd.app", "tuningd.serve", "tuningd.cli", "tuningd.config",
                           "tuningd.config_values", "tuningd.config_ha", "tuningd.ports"}, \
        sorted(top - rooms)


@pytest.mark.parametrize("module", _of("tuningd.client"))
def test_the_client_talks_to_the_daemon_over_http_only(module: str) -> None:
    """The CLI client knows the daemon by its API alone: of tuningd it imports itself and the
    token file reader, never the core, the service, the stores or the HTTP adapter."""
    bad = {d for d in _deps(module)
           if not _in(d, "tuningd.client") and d != "tuningd.adapters.secret_files"}
    assert not bad, f"{module} depends on {sorted(bad)}"


def test_nothing_but_the_entry_point_uses_the_client() -> None:
    """The client is a leaf: only the command line entry point (tuningd.cli) imports it."""
    for module in MODULES:
        if module != "tuningd.cli" and not _in(module, "tuningd.client"):
            assert not any(_in(d, "tuningd.client") for d in _deps(module)), module


@pytest.mark.parametrize("module", _of("tuningd.http"))
def test_the_http_adapter_reaches_the_service_only_through_its_facade(module: str) -> None:
    """The API is typed against service.facade.JobService (the leader's engine and a standby's
    facade both are one), never against the engine or its parts."""
    inner = {d for d in _deps(module) if _in(d, "tuningd.service")} - {"tuningd.service.facade"}
    assert not inner, f"{module} depends on {sorted(inner)}"


def test_no_module_is_over_500_lines() -> None:
    """Rooms of one concern: a module that grows past 500 lines is split by concern."""
    long = {m: n for m, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long
