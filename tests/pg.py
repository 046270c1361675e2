"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary directory, one server on
a unix socket there and on a free loopback port, run as an unprivileged user when we are root
(initdb refuses root), and a fresh database per test.

Without the binaries (or asyncpg) the tests that need it skip, except under CI=true, where they
fail: CI installs Debian's postgresql (.ci/install-ops.sh), so a skip there would hide a hole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "tuningd"
# Debian puts each major version's binaries under /usr/lib/postgresql/<ver>/bin, off PATH.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
UNPRIVILEGED = "nobody"


def find_bin_dir() -> Path | None:
    """The directory holding initdb and postgres: on PATH, else Debian's newest version."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        found = Path(initdb).resolve().parent
        if (found / "postgres").exists():
            return found
    if DEBIAN_ROOT.is_dir():
        versions = sorted((p for p in DEBIAN_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
                          key=lambda p: int(p.name) if p.name.isdigit() else 0)
        if versions:
            return versions[-1] / "bin"
    return None


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true where PostgreSQL must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL tests cannot run under CI=true: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cluster:
    """A running test server: reach it by unix socket (socket_dir) or loopback TCP (port)."""

    socket_dir: Path
    port: int

    def url(self, database: str = "postgres", *, tcp: bool = False) -> str:
        """A postgresql:// URL of one database (trust authentication: no password)."""
        if tcp:
            return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"


def _run_as() -> dict[str, int | list[int]]:
    """subprocess arguments that drop root to an unprivileged user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(UNPRIVILEGED)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """initdb, start, yield, stop and remove a cluster (fsync off: nothing here must last)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable("PostgreSQL binaries (initdb, postgres) not found on PATH or under "
                    f"{DEBIAN_ROOT}/*/bin")
    assert bin_dir is not None
    # Under /tmp, not pytest's tmp_path: its parents are root-only, the server user must reach it.
    root = Path(tempfile.mkdtemp(prefix="tuningd-pg-"))
    drop = _run_as()
    if drop:
        os.chown(root, int(drop["user"]), int(drop["group"]))
    data = root / "data"
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    init = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-sync"],
        cwd=root, env=env, capture_output=True, text=True, check=False, **drop)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr or init.stdout}")
    port = _free_port()
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data), "-k", str(root), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=300"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, **drop)
    try:
        _wait_ready(server, bin_dir, root, port)
        yield Cluster(root, port)
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown: abort sessions, no checkpoint wait
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: subprocess.Popen[bytes], bin_dir: Path, root: Path, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail("postgres exited at start: "
                        + (root / "server.log").read_text(errors="replace")[-2000:])
        ready = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", str(root), "-p",
                                str(port), "-U", SUPERUSER, "-d", "postgres"], check=False)
        if ready.returncode == 0:
            return
        time.sleep(0.05)  # polling a child's start-up: there is no event to wait on
    pytest.fail("postgres did not accept connections within 60 s")


def _admin(cluster: Cluster, sql: str) -> None:
    """Run one statement as the superuser, on a loop of its own (callers may be inside one)."""
    try:
        import asyncpg
    except ImportError:
        unavailable("asyncpg is not installed (pip install '.[postgres]')")
        raise

    async def run() -> None:
        conn = await asyncpg.connect(cluster.url())
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def create_database(cluster: Cluster) -> str:
    """A new, empty database's name."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(cluster, f'CREATE DATABASE "{name}"')
    return name


def drop_database(cluster: Cluster, name: str) -> None:
    """Drop a database, ending the sessions still on it."""
    _admin(cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
