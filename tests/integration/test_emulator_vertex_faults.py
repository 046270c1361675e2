"""How tuningd's own VertexClient classifies each emulator fault (late creates, list lag, error
rules, garbled replies); documents what the engine will see, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from emulator_faults_helpers import LOCATION, PROJECT, job_body, set_faults

from tuningd.adapters.google_auth import AnonymousTokenSource
from tuningd.adapters.vertex_http import VertexClient
from tuningd.core.errors import RemoteError
from tuningd.emulator import Emulator, EmulatorConfig, ManualClock

NUMBER = "123456789012"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(seed=6, max_concurrent=10, pending_seconds=5, job_seconds=60)
    async with Emulator(config, clock=ManualClock()) as emulator:
        yield emulator


@pytest.fixture
def vertex(http: aiohttp.ClientSession, emu: Emulator) -> VertexClient:
    return VertexClient(http, AnonymousTokenSource(), endpoint=emu.url, timeout_s=5)


async def failure(call: Awaitable[Any]) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        await call
    return caught.value


def body(tag: str) -> dict[str, Any]:
    return job_body(tag, labels={"tuningd-job-id": tag, "managed-by": "tuningd"})


async def test_late_create_is_unknown_outcome_then_found_by_label(
        http: aiohttp.ClientSession, emu: Emulator, vertex: VertexClient) -> None:
    """A late create raises kind unknown_outcome; reconciling right away finds nothing, and
    the job is there once it lands (so an early 'absent' verdict would duplicate it)."""
    await set_faults(http, emu, late_create_rate=1.0, late_create_delay_s=60)
    err = await failure(vertex.create(PROJECT, LOCATION, body("late")))
    assert (err.kind, err.remote_status) == ("unknown_outcome", "UNAVAILABLE")
    await set_faults(http, emu)
    assert await vertex.list_all(PROJECT, LOCATION, filter="labels.tuningd-job-id=late") == []
    emu.advance(60)
    [found] = await vertex.list_all(PROJECT, LOCATION, filter="labels.tuningd-job-id=late")
    assert found["labels"]["tuningd-job-id"] == "late"


async def test_held_late_create_times_the_client_out(http: aiohttp.ClientSession,
                                                     emu: Emulator) -> None:
    """A hold longer than the client's timeout is unknown_outcome DEADLINE_EXCEEDED."""
    short = VertexClient(http, AnonymousTokenSource(), endpoint=emu.url, timeout_s=0.2)
    await set_faults(http, emu, late_create_rate=1.0, late_create_hold_s=5,
                     late_create_delay_s=1)
    err = await failure(short.create(PROJECT, LOCATION, body("held")))
    assert (err.kind, err.remote_status) == ("unknown_outcome", "DEADLINE_EXCEEDED")
    emu.advance(6)
    assert len(emu.state.jobs) == 1


async def test_lagging_list_hides_a_created_job_without_error(
        http: aiohttp.ClientSession, emu: Emulator, vertex: VertexClient) -> None:
    """With list lag a fresh job is simply absent from list_all while get finds it."""
    await set_faults(http, emu, list_lag_s=30)
    created = await vertex.create(PROJECT, LOCATION, body("fresh"))
    assert await vertex.list_all(PROJECT, LOCATION, filter="labels.tuningd-job-id=fresh") == []
    assert (await vertex.get(created["name"]))["name"] == created["name"]


@pytest.mark.parametrize("fault", ["malformed_rate", "truncated_rate"])
async def test_garbled_replies(http: aiohttp.ClientSession, emu: Emulator,
                               vertex: VertexClient, fault: str) -> None:
    """A garbled create is unknown_outcome (the job exists); garbled get and list are
    transient; a garbled cancel looks like success to the client although nothing was
    cancelled."""
    created = await vertex.create(PROJECT, LOCATION, body("ok"))
    await set_faults(http, emu, **{fault: 1.0})
    err = await failure(vertex.create(PROJECT, LOCATION, body("garbled")))
    assert err.kind == "unknown_outcome"
    assert len(emu.state.jobs) == 2
    assert (await failure(vertex.get(created["name"]))).kind == "transient"
    assert (await failure(vertex.list(PROJECT, LOCATION))).kind == "transient"
    await vertex.cancel(created["name"])  # no error raised...
    job = emu.state.jobs[created["name"].rsplit("/", 1)[1]]
    assert job.cancel_s is None  # ...yet the job is not cancelling


Call = Callable[[VertexClient, str], Awaitable[Any]]


def _create(v: VertexClient, name: str) -> Awaitable[Any]:
    return v.create(PROJECT, LOCATION, body("x"))


def _get(v: VertexClient, name: str) -> Awaitable[Any]:
    return v.get(name)


def _list(v: VertexClient, name: str) -> Awaitable[Any]:
    return v.list(PROJECT, LOCATION)


def _cancel(v: VertexClient, name: str) -> Awaitable[Any]:
    return v.cancel(name)


@pytest.mark.parametrize(("rule", "call", "kind", "status", "http_status"), [
    ({"status": 403}, _create, "permanent", "PERMISSION_DENIED", 403),
    ({"status": 403, "reason": "SERVICE_DISABLED"}, _get, "permanent", "PERMISSION_DENIED", 403),
    ({"status": 403, "reason": "BILLING_DISABLED"}, _list, "permanent", "PERMISSION_DENIED",
     403),
    ({"status": 401}, _get, "auth", "UNAUTHENTICATED", 401),
    ({"status": 400}, _create, "permanent", "INVALID_ARGUMENT", 400),
    ({"status": 400, "status_name": "FAILED_PRECONDITION"}, _cancel, "permanent",
     "FAILED_PRECONDITION", 400),
    ({"status": 404}, _get, "permanent", "NOT_FOUND", 404),
    ({"status": 409}, _create, "permanent", "ABORTED", 409),
    ({"status": 409, "status_name": "ALREADY_EXISTS"}, _create, "permanent", "ALREADY_EXISTS",
     409),
    ({"status": 429}, _create, "quota", "RESOURCE_EXHAUSTED", 429),
    ({"status": 503}, _create, "unknown_outcome", "UNAVAILABLE", 503),
    ({"status": 502}, _list, "transient", "UNAVAILABLE", 502),
    ({"status": 504}, _get, "transient", "DEADLINE_EXCEEDED", 504),
    ({"status": 500}, _cancel, "transient", "INTERNAL", 500),
])
async def test_error_rules(http: aiohttp.ClientSession, emu: Emulator, vertex: VertexClient,
                           rule: dict[str, Any], call: Call, kind: str, status: str,
                           http_status: int) -> None:
    """Each rule status reaches the client with Google's status and the kind the engine acts
    on (a 401 after the client's one refresh-and-retry); nothing is created."""
    created = await vertex.create(PROJECT, LOCATION, body("existing"))
    await set_faults(http, emu, error_rules=[rule])
    err = await failure(call(vertex, created["name"]))
    assert (err.kind, err.remote_status, err.http_status) == (kind, status, http_status)
    assert len(emu.state.jobs) == 1
    if http_status == 401:
        assert dict(emu.state.request_counts["get"]) == {"401": 2}
