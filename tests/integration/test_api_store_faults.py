"""The control API over a real engine and SQLite store that fails: 503 in Google's envelope, and
nothing changed on disk or in the engine's memory."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from engine_harness import Harness, spec
from sqlite_faults import disk_full, disk_has_room, read_only

from tuningd.core.model import LocalState

Client = TestClient[web.Request, web.Application]

BASE = "/v1/projects/my-proj/locations/us-central1/tuningJobs"
FULL = "the job store cannot be written: database or disk is full"
READ_ONLY = "the job store cannot be written: the database is read-only"


async def assert_unavailable(resp: Any, message: str, sqlite_error: str) -> None:
    """503 UNAVAILABLE in Google's envelope, saying why, with tuningd's ErrorInfo."""
    assert resp.status == 503, await resp.text()
    error = (await resp.json())["error"]
    assert (error["code"], error["status"], error["message"]) == (503, "UNAVAILABLE", message)
    assert error["details"] == [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "STORE_UNAVAILABLE",
        "domain": "tuningd", "metadata": {"sqlite_error": sqlite_error},
    }]


async def _stored(h: Harness) -> dict[LocalState, int]:
    return {s: n for s, n in (await h.store.count_by_state()).items() if n}


def _in_memory(h: Harness) -> dict[LocalState, int]:
    return {s: n for s, n in h.engine.state_counts().items() if n}


async def test_create_on_a_full_disk_is_503_and_stores_nothing(
        daemon: tuple[Client, Harness]) -> None:
    """A create the disk cannot hold answers 503 "database or disk is full"; no job appears on
    disk, in the engine or in a list; the same create works once there is room."""
    client, h = daemon
    await disk_full(h.store)
    body = {**spec(), "description": "d" * 100_000}  # needs new pages, whatever is free
    await assert_unavailable(await client.post(BASE, json=body, params={"requestId": "r-1"}),
                             FULL, "SQLITE_FULL")
    assert await _stored(h) == {}
    assert _in_memory(h) == {}
    assert await (await client.get(BASE)).json() == {}
    await disk_has_room(h.store)
    resp = await client.post(BASE, json=body, params={"requestId": "r-1"})
    assert resp.status == 200
    assert await _stored(h) == {LocalState.QUEUED: 1}
    assert _in_memory(h) == {LocalState.QUEUED: 1}


async def test_create_on_a_read_only_database_is_503(daemon: tuple[Client, Harness]) -> None:
    """A create while the database is read-only answers 503 "the database is read-only"."""
    client, h = daemon
    await read_only(h.store)
    await assert_unavailable(await client.post(BASE, json=spec()), READ_ONLY, "SQLITE_READONLY")
    assert await _stored(h) == {}
    assert _in_memory(h) == {}


@pytest.mark.parametrize("state", [LocalState.QUEUED, LocalState.RUNNING])
async def test_cancel_on_a_read_only_database_is_503_and_changes_nothing(
        daemon: tuple[Client, Harness], state: LocalState) -> None:
    """A cancel the store cannot record answers 503; the job stays as it was on disk and in
    memory (GET still answers), and the same cancel succeeds once the store is writable."""
    client, h = daemon
    job = await h.submit()

    async def reached() -> bool:
        return (await h.job(job.id)).state is state

    await h.run_until(reached)  # RUNNING: submitted, and seen running on the emulator
    before = await h.job(job.id)
    assert before.state is state
    history = await h.history(job.id)
    await read_only(h.store)
    await assert_unavailable(await client.post(f"{BASE}/{job.id}:cancel"), READ_ONLY,
                             "SQLITE_READONLY")
    assert await h.job(job.id) == before
    assert await h.history(job.id) == history
    assert _in_memory(h) == {state: 1}
    view = await (await client.get(f"{BASE}/{job.id}")).json()
    assert (view["tuningd"]["state"], view["tuningd"]["cancelRequested"]) == (state.value, False)
    await read_only(h.store, False)
    assert (await client.post(f"{BASE}/{job.id}:cancel")).status == 200
    after = await h.job(job.id)
    assert after.cancel_requested
    assert after.state in (LocalState.CANCELLED, LocalState.CANCELLING)
