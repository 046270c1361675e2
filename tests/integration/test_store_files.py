"""Damaged, empty, foreign and aliased database files, owner-only modes, store check and backup:
real SQLite files damaged on purpose (no mocks)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from engine_harness import Harness, spec
from structlog.testing import capture_logs

from tests.integration.store_jobs import insert_job
from tuningd.adapters.sqlite.store import EXIT_STORE_UNUSABLE, RowDamaged, Store, StoreUnusable
from tuningd.adapters.sqlite.tools import StoreToolUnusable, ToolError, backup, check
from tuningd.core import errors
from tuningd.core.model import Job, LocalState, Outcome

Client = TestClient[web.Request, web.Application]

REMOTE_MARK = "REMOTEMARKREMOTEMARK"
SPEC_MARK = "SPECMARKSPECMARK"


def make_job(n: int, *, state: LocalState = LocalState.QUEUED, remote: str | None = None,
             description: str = "") -> Job:
    spec = {"baseModel": "gemini-2.5-flash", "description": description or f"job {n}"}
    job = Job(id=f"job{n:04d}", project="my-proj", location="us-central1",
              spec_json=json.dumps(spec), base_model="gemini-2.5-flash", state=state,
              created_at=1000.0 + n, updated_at=1000.0 + n)
    if remote is not None:
        job = job.evolve(remote_json=json.dumps({"name": remote, "state": "JOB_STATE_SUCCEEDED"}),
                         outcome=Outcome.NORMAL, ended_at=2000.0 + n)
    return job


async def fill(db: Path, count: int = 12, *, damaged: int | None = None) -> list[Job]:
    """`count` jobs, all succeeded with a remote copy; job `damaged` carries the markers."""
    jobs = []
    async with await Store.open(db) as store:
        for n in range(count):
            marked = n == damaged
            job = make_job(n, state=LocalState.SUCCEEDED,
                           remote=REMOTE_MARK if marked else f"remote-{n}",
                           description=SPEC_MARK if marked else "")
            await insert_job(store, job)
            jobs.append(job)
    return jobs


def overwrite(db: Path, mark: str, new: bytes) -> None:
    """Overwrite the first bytes of `mark` inside the file, as a bad sector would."""
    data = bytearray(db.read_bytes())
    at = data.index(mark.encode())
    data[at:at + len(new)] = new
    db.write_bytes(bytes(data))


def lock_is_free(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# ----- damaged or odd files refused at open -----

def _header(data: bytes) -> bytes:
    return b"\x00" * 16 + data[16:]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage_end(data: bytes) -> bytes:
    return data[:-6000] + bytes((i * 151 + 7) % 256 for i in range(6000))


DAMAGES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "corrupt header": (_header, "is not an SQLite database"),
    "truncated": (_truncated, "is damaged"),
    "garbage end": (_garbage_end, "is damaged"),
    "zero bytes": (lambda _: b"", "is empty (0 bytes)"),
    "not SQLite": (lambda _: b"name,state\njob1,queued\n" * 200, "is not an SQLite database"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
async def test_damaged_or_odd_file_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    """Each damaged or odd file raises StoreUnusable naming the file and what to do; the file
    is left byte for byte as it was and the daemon lock is released."""
    db = tmp_path / "tuningd.db"
    await fill(db)
    make, words = DAMAGES[damage]
    db.write_bytes(make(db.read_bytes()))
    before = db.read_bytes()
    with pytest.raises(StoreUnusable) as caught:
        await Store.open(db)
    message = caught.value.message
    assert message.startswith(f"database {db} {words}"), message
    assert "restore it from a backup" in message and "tuningd store check" in message
    assert "\n" not in message
    assert isinstance(caught.value, errors.FailedPrecondition)
    assert db.read_bytes() == before
    assert lock_is_free(f"{db}.lock")
    assert check(str(db)).file_problems


async def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    """An SQLite file of some other program (tables, schema version 0) is not migrated into."""
    db = tmp_path / "tuningd.db"
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    raw.close()
    with pytest.raises(StoreUnusable, match=r"is not a tuningd database .*accounts"):
        await Store.open(db)
    with sqlite3.connect(db) as raw:
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    assert names == {"accounts"}


async def test_missing_table_at_current_version_is_refused(tmp_path: Path) -> None:
    """A database claiming the current schema but lacking a table fails the schema check."""
    db = tmp_path / "tuningd.db"
    await fill(db, 1)
    with sqlite3.connect(db) as raw:
        raw.execute("DROP TABLE job_labels")
    raw.close()
    with pytest.raises(StoreUnusable, match="lacks table job_labels"):
        await Store.open(db)


def test_exit_code_is_the_units_restart_prevent_status() -> None:
    """`tuningd serve`'s exit code for an unusable file is the one the unit never restarts."""
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "tuningd.service").read_text()
    assert f"RestartPreventExitStatus={EXIT_STORE_UNUSABLE}\n" in unit


# ----- damaged rows: reported and skipped -----

@pytest.mark.parametrize(("mark", "bad", "column", "problem"), [
    (REMOTE_MARK, b"\xff\xfe", "remote_json", "is not valid UTF-8"),
    (REMOTE_MARK, b'"}', "remote_json", "is not valid JSON"),
    (SPEC_MARK, b"\xc3\x28", "spec_json", "is not valid UTF-8"),
])
async def test_mid_file_damage_in_a_json_column_skips_only_that_row(
        tmp_path: Path, mark: str, bad: bytes, column: str, problem: str) -> None:
    """Bytes damaged inside one job's JSON column (the file's structure intact): the store
    opens, every list and page leaves out that job alone, reading it raises RowDamaged (503),
    and the damage is logged once."""
    db = tmp_path / "tuningd.db"
    jobs = await fill(db, 12, damaged=6)
    overwrite(db, mark, bad)
    sound = [j.id for j in reversed(jobs) if j.id != "job0006"]
    with capture_logs() as logs:
        async with await Store.open(db) as store:
            assert [j.id for j in await store.list_jobs(limit=50)] == sound
            # Pages of 3 put the damaged row at a page's end: no page ends early or repeats.
            seen: list[str] = []
            key = None
            while True:
                page, key = await store.list_page("my-proj", "us-central1", after_key=key,
                                                  limit=3)
                seen.extend(j.id for j in page)
                if key is None:
                    break
            assert seen == sound
            with pytest.raises(RowDamaged) as caught:
                await store.get("job0006")
            assert caught.value.http_status == 503 and isinstance(caught.value,
                                                                   errors.StoreError)
            assert f"jobs.{column} {problem}" in caught.value.message
            assert (await store.count_by_state())[LocalState.SUCCEEDED] == 12
            assert await store.get("job0005") == jobs[5]
            assert store.damaged == {("jobs", "job0006", column)}
    reports = [e for e in logs if e["event"] == "store.row_damaged"]
    assert len(reports) == 1
    assert (reports[0]["key"], reports[0]["column"], reports[0]["problem"]) == (
        "job0006", column, problem)
    report = check(str(db))
    assert not report.file_problems
    assert report.row_problems == [f"job job0006: jobs.{column} {problem}"]


async def test_damaged_working_set_row_and_event_are_skipped(tmp_path: Path) -> None:
    """A queued job whose row is damaged stays out of the engine's working set, and a damaged
    history event stays out of its job's history, without failing the read."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db) as store:
        for n in range(3):
            await insert_job(store, make_job(n), detail={"n": n})
    with sqlite3.connect(db) as raw:
        # Bytes that are not UTF-8, written as text: what a flipped bit leaves behind. (A bad
        # state fails quick_check's CHECK constraints at open instead.)
        raw.execute("UPDATE jobs SET spec_json = CAST(x'7b22ff223a317d' AS TEXT) "
                    "WHERE id = 'job0001'")
        raw.execute("UPDATE job_events SET detail_json = '{\"n\": ' WHERE job_id = 'job0002'")
    raw.close()
    async with await Store.open(db) as store:
        assert [j.id for j in await store.active_and_queued()] == ["job0000", "job0002"]
        assert await store.history("job0002") == []
        assert [e.reason for e in await store.history("job0000")] == ["accepted"]
        assert store.damaged == {("jobs", "job0001", "spec_json"),
                                 ("job_events", "job0002 event 1", "detail_json")}


# ----- one daemon per file, whatever the path -----

async def test_symlinked_alias_cannot_open_a_second_store(tmp_path: Path) -> None:
    """A symlink to the database locks the same `.lock` file (the resolved path's)."""
    db = tmp_path / "tuningd.db"
    alias = tmp_path / "alias.db"
    alias.symlink_to(db.name)
    async with await Store.open(db):
        with pytest.raises(errors.StoreLocked) as caught:
            await Store.open(alias)
        assert f"{alias} (= {db})" in caught.value.message
        assert f"lock {db}.lock" in caught.value.message
    assert not (tmp_path / "alias.db.lock").exists()
    async with await Store.open(alias) as store:  # free once the first one closed
        assert await store.check_writable()


async def test_hard_link_alias_in_another_process_is_refused(tmp_path: Path) -> None:
    """A hard link (its own `.lock` file) still meets the flock on the database file itself."""
    db = tmp_path / "tuningd.db"
    other = tmp_path / "other"
    other.mkdir()
    async with await Store.open(db):
        os.link(db, other / "tuningd.db")
        with pytest.raises(errors.StoreLocked, match="another path to the same file"):
            await Store.open(other / "tuningd.db")
        code = ("import asyncio, sys\nfrom tuningd.core import errors\n"
                "from tuningd.adapters.sqlite.store import Store"
                "\ntry:\n    asyncio.run(Store.open(sys.argv[1]))\nexcept errors.StoreLocked"
                " as exc:\n    print(exc)\n    sys.exit(3)\n")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, str(other / "tuningd.db"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await child.communicate()
        assert child.returncode == 3, err
        assert b"already using database" in out


# ----- owner-only files -----

@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
async def test_new_database_and_its_files_are_owner_only_whatever_the_umask(
        tmp_path: Path) -> None:
    """With umask 000 the database, its WAL and shared-memory files and the lock are 0600, and
    no half-made file is left beside it."""
    db = tmp_path / "tuningd.db"
    async with await Store.open(db) as store:
        await insert_job(store, make_job(1))
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"tuningd.db": 0o600, "tuningd.db-wal": 0o600, "tuningd.db-shm": 0o600,
                     "tuningd.db.lock": 0o600}


async def test_group_readable_database_is_reported(tmp_path: Path) -> None:
    """An existing database readable by others opens, with a warning that names the chmod."""
    db = tmp_path / "tuningd.db"
    await fill(db, 1)
    db.chmod(0o644)
    with capture_logs() as logs:
        async with await Store.open(db):
            pass
    warnings = [e for e in logs if e["event"] == "store.file_permissions"]
    assert len(warnings) == 1 and warnings[0]["hint"].startswith(f"chmod 600 {db}")


async def test_leftover_of_a_killed_creation_is_replaced(tmp_path: Path) -> None:
    """A half-made `<db>.creating` (a creation killed midway) never becomes the database."""
    db = tmp_path / "tuningd.db"
    (tmp_path / "tuningd.db.creating").write_bytes(b"half")
    async with await Store.open(db) as store:
        assert await store.check_writable()
    assert not (tmp_path / "tuningd.db.creating").exists()
    assert not check(str(db)).file_problems


# ----- store check and backup -----

async def test_backup_of_an_open_store_is_complete_and_owner_only(tmp_path: Path) -> None:
    """A backup taken while the store is open and written holds every committed job, is
    0600 and one self-contained file; an existing destination is refused."""
    db = tmp_path / "tuningd.db"
    dest = tmp_path / "backup.db"
    async with await Store.open(db) as store:
        for n in range(5):
            await insert_job(store, make_job(n))
        assert await asyncio.to_thread(backup, str(db), str(dest)) == 5
        with pytest.raises(ToolError, match="exists"):
            backup(str(db), str(dest))
    assert dest.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("backup")) == [
        "backup.db"]
    report = check(str(dest))
    assert report.sound and report.jobs == 5 and report.events == 5
    async with await Store.open(dest) as copy:
        assert [j.id for j in await copy.list_jobs()] == [f"job{n:04d}" for n in range(4, -1, -1)]


async def test_backup_of_a_damaged_database_is_refused(tmp_path: Path) -> None:
    """No backup file is written from a damaged source."""
    db = tmp_path / "tuningd.db"
    await fill(db)
    db.write_bytes(_garbage_end(db.read_bytes()))
    with pytest.raises(StoreToolUnusable, match="is damaged"):
        backup(str(db), str(tmp_path / "backup.db"))
    assert not list(tmp_path.glob("backup*"))


# ----- through the control API -----

BASE = "/v1/projects/my-proj/locations/us-central1/tuningJobs"


async def test_api_lists_around_a_damaged_row_and_answers_503_for_it(
        daemon: tuple[Client, Harness]) -> None:
    """A job whose stored JSON went bad is left out of the list (200, the others listed) and
    reading it answers 503 in Google's envelope naming the damage, never a 500."""
    client, h = daemon
    names = []
    for n in range(3):
        resp = await client.post(BASE, json={**spec(), "description": f"job {n}"})
        assert resp.status == 200, await resp.text()
        names.append((await resp.json())["name"].rsplit("/", 1)[-1])
    bad = names[1]
    h.engine._ledger.jobs.pop(bad)  # as after a restart: only the stored row is left
    with sqlite3.connect(h.store.path) as raw:
        raw.execute("UPDATE jobs SET spec_json = CAST(x'7b22ff223a317d' AS TEXT) WHERE id = ?",
                    (bad,))
    raw.close()
    resp = await client.get(BASE)
    assert resp.status == 200, await resp.text()
    listed = [j["name"].rsplit("/", 1)[-1] for j in (await resp.json())["tuningJobs"]]
    assert sorted(listed) == sorted([names[0], names[2]])
    resp = await client.get(f"{BASE}/{bad}")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["status"] == "UNAVAILABLE"
    assert f"job {bad} is damaged (jobs.spec_json is not valid UTF-8)" in error["message"]
