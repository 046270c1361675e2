"""Acceptance: `tuningd serve` on PostgreSQL, `tuningd migrate`, and `tuningd store copy` from
SQLite, as real processes against the test cluster."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from helpers import (
    REPO,
    Processes,
    job_body,
    job_id_of,
    tuningd_argv,
    wait_until,
    write_toml,
)

from tests.integration.store_jobs import full_job, insert_job, make_job
from tuningd.adapters.migrations import LATEST
from tuningd.adapters.sqlite.store import Store
from tuningd.core.model import LocalState

pytestmark = pytest.mark.acceptance

PASSWORD = "pw-never-shown-7f3a"


def _with_password(url: str) -> str:
    """The URL with a password (the test cluster trusts local users, so it is never checked)."""
    return url.replace("postgresql://tuningd@", f"postgresql://tuningd:{PASSWORD}@", 1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tuningd_argv(*args), capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)


def test_serve_on_postgres_runs_jobs_and_keeps_them(procs: Processes, pg_url: str) -> None:
    """A daemon on PostgreSQL takes jobs to SUCCEEDED, a restarted one still has them, and its
    logs never show the database password."""
    emu = procs.emulator(job_seconds=0.5, pending_seconds=0.2)
    daemon = procs.daemon(emu.url, {"store": {"url": _with_password(pg_url)}})
    ids = [job_id_of(daemon.submit(job_body(f"pg-{n}"))) for n in range(3)]
    wait_until(lambda: set(daemon.states(ids).values()) == {"JOB_STATE_SUCCEEDED"}, 60,
               message=lambda: f"jobs to succeed: {daemon.states(ids)}\n{daemon.tail()}")
    daemon.kill()
    daemon.start()
    assert set(daemon.states(ids).values()) == {"JOB_STATE_SUCCEEDED"}
    assert len(emu.state()["jobs"]) == 3
    logs = daemon.logs()
    assert PASSWORD not in logs
    assert any(r.get("event") == "daemon.ready" and "tuningd:***@" in str(r.get("store"))
               for r in daemon.log_records())


def test_migrate_reports_versions_and_is_idempotent(pg_url: str, tmp_path: Path) -> None:
    """`tuningd migrate` brings an empty PostgreSQL database or SQLite file to the newest
    schema, says from which version to which, and has nothing to do the second time."""
    for name, store in (("pg", {"url": _with_password(pg_url)}),
                        ("sqlite", {"path": str(tmp_path / "jobs.db")})):
        config = tmp_path / f"{name}.toml"
        write_toml(config, {"store": store})
        first = _cli("migrate", "--config", str(config))
        assert first.returncode == 0, first.stderr
        assert f"migrated from schema version 0 to {LATEST}" in first.stdout, first.stdout
        again = _cli("migrate", "--config", str(config))
        assert again.returncode == 0, again.stderr
        assert f"schema version {LATEST} is current" in again.stdout
        assert PASSWORD not in first.stdout + first.stderr + again.stdout + again.stderr


def test_store_copy_moves_everything_once(pg_url: str, tmp_path: Path) -> None:
    """`tuningd store copy` moves every job (every field), event and label from SQLite into an
    empty PostgreSQL database, prints the verified counts, and refuses a non-empty target."""
    db = tmp_path / "tuningd.db"
    jobs = [full_job(), *(make_job(n, spec_json='{"labels": {"team": "a"}}') for n in range(5))]

    async def fill() -> None:
        async with await Store.open(db) as store:
            for job in jobs:
                await insert_job(store, job, "accepted", {"n": 1})
            moved = jobs[1].evolve(state=LocalState.SUBMITTING, updated_at=5.0)
            await store.apply(jobs[1], moved, "submit", notes=("a note",))

    asyncio.run(fill())
    done = _cli("store", "copy", "--from", f"sqlite://{db}", "--to", _with_password(pg_url))
    assert done.returncode == 0, done.stderr
    assert "copied 6 jobs, 8 events and 6 labels" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    async def compare() -> None:
        from tuningd.adapters.postgres import PostgresStore

        async with await Store.open(db) as old, await PostgresStore.open(pg_url) as new:
            assert await new.list_jobs(limit=100) == await old.list_jobs(limit=100)
            for job in jobs:
                assert await new.history(job.id) == await old.history(job.id)
            assert [j.id for j in await new.list_jobs(labels={"team": "a"})] == \
                [j.id for j in await old.list_jobs(labels={"team": "a"})]

    asyncio.run(compare())
    again = _cli("store", "copy", "--from", str(db), "--to", pg_url)
    assert again.returncode == 1
    assert "already holds 6 jobs" in again.stderr and "nothing was copied" in again.stderr
    wrong_way = _cli("store", "copy", "--from", pg_url, "--to", f"sqlite://{db}")
    assert wrong_way.returncode == 2 and "into a PostgreSQL database" in wrong_way.stderr


def test_serve_refuses_an_unknown_store_url(tmp_path: Path) -> None:
    """A store.url naming no known store stops `tuningd config` with exit 2 and one clear line."""
    config = tmp_path / "bad.toml"
    config.write_text('[store]\nurl = "mysql://root:hunter2@db/jobs"\n')
    result = _cli("config", "--config", str(config))
    assert result.returncode == 2
    assert "store.url" in result.stderr and "hunter2" not in result.stderr
    assert "postgresql://USER@HOST" in result.stderr
