"""VertexClient against the in-process Vertex emulator over loopback HTTP, with injected faults."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tuningd.adapters.google_auth import AnonymousTokenSource, StaticTokenSource
from tuningd.adapters.vertex_http import VertexClient, default_endpoint, split_job_name
from tuningd.core.errors import InvalidArgument, RemoteError
from tuningd.emulator import Emulator
from tuningd.emulator.config import EmulatorConfig, ManualClock
from tuningd.emulator.faults import LostReplyMode

PROJECT = "my-proj"
LOCATION = "us-central1"


def job_spec(job_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid canonical create body labelled like tuningd labels its jobs."""
    spec: dict[str, Any] = {
        "baseModel": "gemini-2.5-flash",
        "tunedModelDisplayName": "sentiment-v3",
        "labels": {"tuningd-job-id": job_id or str(uuid.uuid4()), "managed-by": "tuningd"},
        "supervisedTuningSpec": {
            "trainingDatasetUri": "gs://my-bucket/sft/train.jsonl",
            "hyperParameters": {"epochCount": 3, "adapterSize": "ADAPTER_SIZE_FOUR"},
        },
    }
    spec.update(overrides)
    return spec


class Calls:
    """Records every (method, code) the client reports to its observer."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.seconds: list[float] = []

    def __call__(self, method: str, code: str, seconds: float) -> None:
        self.seen.append((method, code))
        self.seconds.append(seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def emulator(clock: ManualClock) -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorConfig(pending_seconds=5, job_seconds=60, cancel_seconds=1), clock=clock)
    await emu.start(port=0)
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture(params=["v1", "v1beta1"])
def client(request: pytest.FixtureRequest, emulator: Emulator,
           session: aiohttp.ClientSession, calls: Calls) -> VertexClient:
    return VertexClient(session, AnonymousTokenSource(), endpoint=emulator.url,
                        api_version=request.param, timeout_s=5, observer=calls)


async def set_faults(session: aiohttp.ClientSession, emulator: Emulator, **faults: Any) -> None:
    """Switch the emulator's fault injection through its admin endpoint."""
    async with session.post(f"{emulator.url}/emulator/faults", json=faults) as resp:
        assert resp.status == 200, await resp.text()


async def jobs_with_label(client: VertexClient, job_id: str) -> list[dict[str, Any]]:
    jobs = await client.list_all(PROJECT, LOCATION, filter=f"labels.tuningd-job-id={job_id}")
    return [j for j in jobs if j.get("labels", {}).get("tuningd-job-id") == job_id]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- the happy paths -----------------------------------------------------------------------------


async def test_create_returns_canonical_pending_job(client: VertexClient, calls: Calls) -> None:
    """create posts the rendered job and returns the parsed canonical TuningJob in PENDING."""
    spec = job_spec()
    job = await client.create(PROJECT, LOCATION, spec)
    project, location, job_id = split_job_name(job["name"])
    assert (location, project) == (LOCATION, "123456789012")
    assert job_id.isdigit()
    assert job["state"] == "JOB_STATE_PENDING"
    assert job["labels"] == spec["labels"]
    assert job["supervisedTuningSpec"]["hyperParameters"]["epochCount"] == 3
    assert calls.seen == [("create", "200")]


async def test_get_follows_the_lifecycle(client: VertexClient, clock: ManualClock) -> None:
    """get returns the job by name and sees it run and succeed as the emulator clock advances."""
    created = await client.create(PROJECT, LOCATION, job_spec())
    assert (await client.get(created["name"]))["state"] == "JOB_STATE_PENDING"
    clock.advance(6)
    assert (await client.get(created["name"]))["state"] == "JOB_STATE_RUNNING"
    clock.advance(120)
    done = await client.get(created["name"])
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert done["tunedModel"]["model"].endswith("@1")


async def test_list_pages_and_list_all(client: VertexClient, calls: Calls) -> None:
    """list returns one page plus a token, and list_all follows every page to the end."""
    names = {(await client.create(PROJECT, LOCATION, job_spec()))["name"] for _ in range(5)}
    page, token = await client.list(PROJECT, LOCATION, page_size=2)
    assert len(page) == 2 and token
    calls.seen.clear()
    everything = await client.list_all(PROJECT, LOCATION, filter="labels.managed-by=tuningd")
    assert {j["name"] for j in everything} == names
    # page_size 100 fits all five: exactly one request.
    assert calls.seen == [("list", "200")]
    pages: list[dict[str, Any]] = []
    token = ""
    while True:
        page, token = await client.list(PROJECT, LOCATION, page_size=2, page_token=token)
        pages.extend(page)
        if not token:
            break
    assert {j["name"] for j in pages} == names


async def test_list_all_small_pages(client: VertexClient, calls: Calls) -> None:
    """list_all with a small page size makes one request per page and loses nothing."""
    names = {(await client.create(PROJECT, LOCATION, job_spec()))["name"] for _ in range(5)}
    calls.seen.clear()
    everything = await client.list_all(PROJECT, LOCATION, page_size=2)
    assert {j["name"] for j in everything} == names
    assert calls.seen == [("list", "200")] * 3


async def test_list_filter_by_label(client: VertexClient) -> None:
    """A label filter finds exactly the job carrying that tuningd-job-id."""
    wanted = str(uuid.uuid4())
    await client.create(PROJECT, LOCATION, job_spec())
    created = await client.create(PROJECT, LOCATION, job_spec(wanted))
    found = await jobs_with_label(client, wanted)
    assert [j["name"] for j in found] == [created["name"]]


async def test_empty_list(client: VertexClient) -> None:
    """An empty list (the `{}` body) is no jobs and no token."""
    assert await client.list(PROJECT, LOCATION) == ([], "")
    assert await client.list_all(PROJECT, LOCATION) == []


async def test_cancel_then_cancelled(client: VertexClient, clock: ManualClock,
                                     calls: Calls) -> None:
    """cancel returns None and the job goes CANCELLING then CANCELLED with error code 1."""
    created = await client.create(PROJECT, LOCATION, job_spec())
    await client.cancel(created["name"])
    assert calls.seen[-1] == ("cancel", "200")
    state = (await client.get(created["name"]))["state"]
    assert state in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    clock.advance(2)
    done = await client.get(created["name"])
    assert done["state"] == "JOB_STATE_CANCELLED"
    assert done["error"]["code"] == 1


# -- definite rejections ---------------------------------------------------------------------------


async def test_validation_error_is_permanent_with_googles_message(client: VertexClient) -> None:
    """A 400 INVALID_ARGUMENT on create is permanent and keeps Google's message and status."""
    bad = job_spec()
    bad["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] = "ADAPTER_SIZE_THIRTY_TWO"
    with pytest.raises(RemoteError) as info:
        await client.create(PROJECT, LOCATION, bad)
    err = info.value
    assert (err.kind, err.http_status, err.status) == ("permanent", 400, "INVALID_ARGUMENT")
    assert "adapter size" in err.message.lower()


async def test_get_unknown_job_is_permanent_404(client: VertexClient) -> None:
    """get of a job that does not exist is permanent with http_status 404 and NOT_FOUND."""
    name = f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/1234567890123456789"
    with pytest.raises(RemoteError) as info:
        await client.get(name)
    assert (info.value.kind, info.value.http_status, info.value.status) == (
        "permanent", 404, "NOT_FOUND")


async def test_cancel_of_ended_job_is_failed_precondition(client: VertexClient,
                                                         clock: ManualClock) -> None:
    """Cancelling a job that already ended is permanent 400 FAILED_PRECONDITION."""
    created = await client.create(PROJECT, LOCATION, job_spec())
    clock.advance(1000)
    assert (await client.get(created["name"]))["state"] == "JOB_STATE_SUCCEEDED"
    with pytest.raises(RemoteError) as info:
        await client.cancel(created["name"])
    assert (info.value.kind, info.value.http_status, info.value.status) == (
        "permanent", 400, "FAILED_PRECONDITION")


async def test_bad_names_are_refused_before_sending(client: VertexClient, calls: Calls) -> None:
    """Malformed job names and locations never reach the network."""
    for name in ("tuningJobs/1", "projects/p/locations/l/tuningJobs/1/../../x",
                 "projects/p/locations/us-central1/tuningJobs/1?x=y"):
        with pytest.raises(InvalidArgument):
            await client.get(name)
    with pytest.raises(RemoteError) as info:
        await client.list(PROJECT, "evil.example.com/")
    assert (info.value.kind, info.value.http_status) == ("invalid_request", 400)
    assert calls.seen == []


# -- injected faults -----------------------------------------------------------------------------


async def test_429_is_quota(client: VertexClient, session: aiohttp.ClientSession,
                            emulator: Emulator) -> None:
    """A 429 RESOURCE_EXHAUSTED is kind quota for create and get alike, with Google's details."""
    created = await client.create(PROJECT, LOCATION, job_spec())
    await set_faults(session, emulator, error_rate=1.0, error_status=429)
    for call in (client.get(created["name"]), client.create(PROJECT, LOCATION, job_spec())):
        with pytest.raises(RemoteError) as info:
            await call
        assert (info.value.kind, info.value.http_status, info.value.status) == (
            "quota", 429, "RESOURCE_EXHAUSTED")
        assert info.value.details and info.value.details[0]["reason"] == "RATE_LIMIT_EXCEEDED"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_transient_for_reads_and_unknown_for_create(
    client: VertexClient, session: aiohttp.ClientSession, emulator: Emulator,
    calls: Calls, status: int,
) -> None:
    """5xx is transient on get/list/cancel but unknown_outcome on create."""
    created = await client.create(PROJECT, LOCATION, job_spec())
    await set_faults(session, emulator, error_rate=1.0, error_status=status)
    for call in (client.get(created["name"]), client.list(PROJECT, LOCATION),
                 client.cancel(created["name"])):
        with pytest.raises(RemoteError) as info:
            await call
        assert (info.value.kind, info.value.http_status) == ("transient", status)
    with pytest.raises(RemoteError) as info:
        await client.create(PROJECT, LOCATION, job_spec())
    assert (info.value.kind, info.value.http_status) == ("unknown_outcome", status)
    assert calls.seen[-4:] == [(m, str(status)) for m in ("get", "list", "cancel", "create")]


async def test_dropped_connection(client: VertexClient, session: aiohttp.ClientSession,
                                  emulator: Emulator, calls: Calls) -> None:
    """A connection dropped without a reply is transient on get and unknown_outcome on create."""
    created = await client.create(PROJECT, LOCATION, job_spec())
    await set_faults(session, emulator, drop_rate=1.0)
    with pytest.raises(RemoteError) as info:
        await client.get(created["name"])
    assert info.value.kind == "transient"
    with pytest.raises(RemoteError) as info:
        await client.create(PROJECT, LOCATION, job_spec())
    assert info.value.kind == "unknown_outcome"
    assert calls.seen[-2:] == [("get", "error"), ("create", "error")]


@pytest.mark.parametrize("mode", [LostReplyMode.DROP, LostReplyMode.UNAVAILABLE])
async def test_lost_create_reply_is_unknown_and_job_exists(
    client: VertexClient, session: aiohttp.ClientSession, emulator: Emulator,
    mode: LostReplyMode,
) -> None:
    """A create whose reply is lost is unknown_outcome, and reconciling by label finds the job."""
    await set_faults(session, emulator, lost_reply_rate=1.0, lost_reply_mode=mode.value)
    job_id = str(uuid.uuid4())
    with pytest.raises(RemoteError) as info:
        await client.create(PROJECT, LOCATION, job_spec(job_id))
    assert info.value.kind == "unknown_outcome"
    await set_faults(session, emulator)
    found = await jobs_with_label(client, job_id)
    assert len(found) == 1
    async with session.get(f"{emulator.url}/emulator/state") as resp:
        state = await resp.json()
    assert [j["name"] for j in state["jobs"]] == [found[0]["name"]]


async def test_timeout(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    """A reply slower than timeout_s is transient on get and unknown_outcome on create."""
    calls = Calls()
    fast = VertexClient(session, AnonymousTokenSource(), endpoint=emulator.url, timeout_s=5)
    created = await fast.create(PROJECT, LOCATION, job_spec())
    slow = VertexClient(session, AnonymousTokenSource(), endpoint=emulator.url,
                        timeout_s=0.2, observer=calls)
    await set_faults(session, emulator, latency_s=2.0)
    with pytest.raises(RemoteError) as info:
        await slow.get(created["name"])
    assert (info.value.kind, info.value.status) == ("transient", "DEADLINE_EXCEEDED")
    with pytest.raises(RemoteError) as info:
        await slow.create(PROJECT, LOCATION, job_spec())
    assert info.value.kind == "unknown_outcome"
    assert calls.seen == [("get", "timeout"), ("create", "timeout")]


async def test_connection_refused_create_is_transient(session: aiohttp.ClientSession) -> None:
    """When nothing listens, create is transient: the request was never sent."""
    calls = Calls()
    client = VertexClient(session, AnonymousTokenSource(),
                          endpoint=f"http://127.0.0.1:{free_port()}", observer=calls)
    with pytest.raises(RemoteError) as info:
        await client.create(PROJECT, LOCATION, job_spec())
    assert info.value.kind == "transient"
    assert calls.seen == [("create", "error")]


async def test_401_refreshes_once_then_auth(session: aiohttp.ClientSession) -> None:
    """A rejected token is invalidated and retried exactly once, then raised as kind auth."""
    emu = Emulator(EmulatorConfig(strict_auth=True), clock=ManualClock())
    await emu.start(port=0)
    try:
        calls = Calls()
        tokens = StaticTokenSource("not-a-token-the-emulator-issued")
        client = VertexClient(session, tokens, endpoint=emu.url, observer=calls)
        with pytest.raises(RemoteError) as info:
            await client.create(PROJECT, LOCATION, job_spec())
        assert (info.value.kind, info.value.http_status) == ("auth", 401)
        assert tokens.invalidations == 1
        assert calls.seen == [("create", "401"), ("create", "401")]
    finally:
        await emu.stop()


async def test_observer_failure_does_not_fail_the_call(
    emulator: Emulator, session: aiohttp.ClientSession,
) -> None:
    """A broken metrics observer never turns a successful create into an error."""

    def broken(method: str, code: str, seconds: float) -> None:
        raise RuntimeError("metrics bug")

    client = VertexClient(session, AnonymousTokenSource(), endpoint=emulator.url, observer=broken)
    assert (await client.create(PROJECT, LOCATION, job_spec()))["name"]


def test_default_endpoints() -> None:
    """Regional, multi-regional and global locations map to Google's hosts."""
    assert default_endpoint("us-central1") == "https://us-central1-aiplatform.googleapis.com"
    assert default_endpoint("eu") == "https://aiplatform.eu.rep.googleapis.com"
    assert default_endpoint("us") == "https://aiplatform.us.rep.googleapis.com"
    assert default_endpoint("global") == "https://aiplatform.googleapis.com"
