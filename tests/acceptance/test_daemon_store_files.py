"""Acceptance: real `tuningd serve` processes on damaged, aliased and full database files, and
`tuningd store check | backup` beside a running daemon."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import (
    REPO,
    DaemonProc,
    Proc,
    Processes,
    job_body,
    job_id_of,
    tuningd_argv,
    wait_until,
)

from tests.integration.store_jobs import insert_job
from tuningd.adapters.sqlite.store import EXIT_STORE_UNUSABLE, Store
from tuningd.core.model import Job, LocalState, Outcome

pytestmark = pytest.mark.acceptance

# Nothing listens there: the daemons that must stop at the store never reach Vertex.
NO_VERTEX = "http://127.0.0.1:9"
MARK = "REMOTEMARKREMOTEMARK"


def _store_with_jobs(db: Path, count: int = 8, *, marked: int | None = None) -> None:
    """Succeeded jobs (nothing for the daemon to do); job `marked` carries MARK in its remote
    copy."""
    async def fill() -> None:
        async with await Store.open(db) as store:
            for n in range(count):
                remote = MARK if n == marked else f"remote-{n}"
                await insert_job(store, Job(
                    id=f"job{n:04d}", project="acc-proj", location="us-central1",
                    spec_json=json.dumps({"baseModel": "gemini-2.5-flash"}),
                    base_model="gemini-2.5-flash", state=LocalState.SUCCEEDED,
                    created_at=1000.0 + n, updated_at=1000.0 + n, outcome=Outcome.NORMAL,
                    remote_json=json.dumps({"name": remote, "state": "JOB_STATE_SUCCEEDED"})))
    asyncio.run(fill())


def _plain_lines(proc: Proc) -> list[str]:
    """stderr lines that are not JSON log records."""
    text = proc.stderr_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if line and not line.startswith("{")]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tuningd_argv(*args), capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)


DAMAGES = {
    "corrupt header": (lambda d: b"\x00" * 16 + d[16:], "is not an SQLite database"),
    "truncated": (lambda d: d[: len(d) // 2], "is damaged"),
    "garbage end": (lambda d: d[:-6000] + bytes((i * 151 + 7) % 256 for i in range(6000)),
                    "is damaged"),
    "zero bytes": (lambda d: b"", "is empty (0 bytes)"),
    "not SQLite": (lambda d: b"just some text\n" * 300, "is not an SQLite database"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_serve_on_a_damaged_file_exits_65_with_one_line(procs: Processes, tmp_path: Path,
                                                        damage: str) -> None:
    """`tuningd serve` on a damaged, empty or non-SQLite file exits 65 (the unit's
    RestartPreventExitStatus) with one plain line naming the file and what to do, and no
    traceback; the file is left as it was."""
    db = tmp_path / "tuningd.db"
    _store_with_jobs(db)
    make, words = DAMAGES[damage]
    db.write_bytes(make(db.read_bytes()))
    before = db.read_bytes()
    daemon = procs.daemon(NO_VERTEX, start=False)
    Proc.start(daemon)
    assert daemon.popen is not None
    assert daemon.popen.wait(timeout=30) == EXIT_STORE_UNUSABLE, daemon.tail()
    lines = _plain_lines(daemon)
    assert len(lines) == 1 and lines[0].startswith(f"tuningd: database {db} {words}"), lines
    assert "restore it from a backup" in lines[0] and "tuningd store check" in lines[0]
    assert "Traceback" not in daemon.logs()
    assert db.read_bytes() == before
    check = _cli("store", "check", "--db", str(db))
    assert check.returncode == EXIT_STORE_UNUSABLE, check
    assert f"damaged: database {db} {words}" in check.stdout


def test_serve_lists_around_a_row_damaged_mid_file(procs: Processes, tmp_path: Path) -> None:
    """Bytes damaged inside one stored JSON column: the daemon starts, lists the other jobs
    (200), answers 503 for that job, reports it once in its log, and `store check` names it."""
    db = tmp_path / "tuningd.db"
    _store_with_jobs(db, marked=3)
    data = bytearray(db.read_bytes())
    at = data.index(MARK.encode())
    data[at:at + 2] = b"\xff\xfe"
    db.write_bytes(bytes(data))
    emu = procs.emulator()
    daemon = procs.daemon(emu.url)
    listed = [job_id_of(j) for j in daemon.list_all()]
    assert listed == [f"job{n:04d}" for n in (7, 6, 5, 4, 2, 1, 0)]
    resp = daemon.call("GET", f"{daemon.collection_url()}/job0003")
    assert resp.status == 503 and resp.json["error"]["status"] == "UNAVAILABLE", resp
    assert "remote_json is not valid UTF-8" in resp.json["error"]["message"]
    daemon.list_all()
    reports = [r for r in daemon.log_records() if r.get("event") == "store.row_damaged"]
    assert [(r["key"], r["column"]) for r in reports] == [("job0003", "remote_json")]
    check = _cli("store", "check", "--db", str(db))
    assert check.returncode == EXIT_STORE_UNUSABLE
    assert "damaged row: job job0003: jobs.remote_json is not valid UTF-8" in check.stdout
    daemon.check_alive()


def test_second_daemon_through_a_symlink_is_refused(procs: Processes, tmp_path: Path) -> None:
    """A daemon whose store.path is a symlink to a running daemon's database exits at once
    naming the first one's pid; the first keeps serving."""
    emu = procs.emulator()
    first = procs.daemon(emu.url)
    job = job_id_of(first.submit(job_body("first")))
    (tmp_path / "alias.db").symlink_to("tuningd.db")
    second = procs.daemon(emu.url, {"store": {"path": str(tmp_path / "alias.db")}},
                          name="second", start=False)
    Proc.start(second)
    assert second.popen is not None
    assert second.popen.wait(timeout=30) == 1, second.tail()
    lines = _plain_lines(second)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"tuningd: another tuningd (pid {first.pid}) is already using "
                               f"{tmp_path / 'alias.db'} (= {tmp_path / 'tuningd.db'})")
    assert first.job(job)["name"].endswith(job)


def test_backup_beside_a_running_daemon(procs: Processes, tmp_path: Path) -> None:
    """`tuningd store backup` copies a running daemon's database (store.path from its config):
    every acknowledged job is in the owner-only copy, which `store check` finds sound."""
    emu = procs.emulator()
    daemon = procs.daemon(emu.url)
    ids = {job_id_of(daemon.submit(job_body(f"b{n}"))) for n in range(5)}
    dest = tmp_path / "backup.db"
    result = _cli("store", "backup", "--config", str(daemon.config_path), str(dest))
    assert result.returncode == 0, result
    assert "(5 jobs)" in result.stdout
    assert dest.stat().st_mode & 0o777 == 0o600
    check = _cli("store", "check", "--db", str(dest))
    assert check.returncode == 0, check
    assert check.stdout.startswith(f"ok: database {dest} is sound (5 jobs")
    again = _cli("store", "backup", "--config", str(daemon.config_path), str(dest))
    assert again.returncode == 1 and "exists" in again.stderr
    daemon.check_alive()
    assert ids <= {job_id_of(j) for j in daemon.list_all()}


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user+mount namespaces")
def test_full_disk_answers_503_with_the_reason(procs: Processes, tmp_path: Path) -> None:
    """On a really full filesystem (a 2 MiB tmpfs in a user namespace, filled by a file), a
    create and a cancel answer 503 "database or disk is full" in Google's envelope, reads still
    answer, /readyz says why; once room is made the same create succeeds."""
    emu = procs.emulator(job_seconds=60.0)
    mount = tmp_path / "small"
    mount.mkdir()
    daemon = DaemonProc(tmp_path, emu.url, {"store": {"path": str(mount / "tuningd.db")}},
                        name="full")
    # unshare execs sh, which execs tuningd: one pid throughout.
    daemon.argv = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=2m tmpfs "$0" && '
                   'exec "$@"', str(mount), *daemon.argv]
    procs.add(daemon)
    daemon.start()
    job = job_id_of(daemon.submit(job_body("before")))
    # The daemon's own view of the mount (its mount namespace), as root sees /proc/PID/root.
    filler = Path(f"/proc/{daemon.pid}/root") / str(mount).lstrip("/") / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    body = job_body("during", description="d" * 200_000)
    resp = daemon.call("POST", daemon.collection_url(), body=body)
    assert resp.status == 503, resp
    error = resp.json["error"]
    assert (error["status"], error["message"]) == (
        "UNAVAILABLE", "the job store cannot be written: database or disk is full")
    assert error["details"][0]["metadata"] == {"sqlite_error": "SQLITE_FULL"}
    cancel = daemon.cancel(job)
    assert cancel.status == 503 and "disk is full" in cancel.json["error"]["message"], cancel
    assert daemon.job(job)["name"].endswith(job)
    ready = daemon.call("GET", daemon.url + "/readyz")
    assert ready.status == 503 and "store not writable" in ready.raw.decode()
    filler.unlink()
    wait_until(lambda: daemon.call("POST", daemon.collection_url(), body=body).status == 200,
               20, message="a create once there is room")
    assert "Traceback" not in daemon.logs()
