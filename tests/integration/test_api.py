"""Control API over aiohttp's test server with an in-memory fake of our Engine facade."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tuningd.core import recovery
from tuningd.core.errors import ConfigError, FailedPrecondition, NotFound, Unavailable
from tuningd.core.model import Job, JobEvent, LocalState, Outcome
from tuningd.http.api import job_view, make_api_app
from tuningd.service.engine import Engine, JobPredicate, Page
from tuningd.vertex import models, wire

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = "/v1/projects/proj-a/locations/us-central1/tuningJobs"
BETA = "/v1beta1/projects/proj-a/locations/us-central1/tuningJobs"
INT_ENUMS = {"$alt": "json;enum-encoding=int"}
T0 = 1_750_000_000.0

VALID_JOB: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "tunedModelDisplayName": "sentiment-v3",
    "labels": {"team": "nlp"},
    "supervisedTuningSpec": {
        "trainingDatasetUri": "gs://my-bucket/sft/train.jsonl",
        "hyperParameters": {"epochCount": "3", "adapterSize": "ADAPTER_SIZE_FOUR"},
    },
}


class FakeEngine(Engine):
    """An honest in-memory Engine facade: dict storage, no loop, no Vertex."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.events: dict[str, list[JobEvent]] = {}
        self.submits: list[dict[str, Any]] = []
        self.is_ready = True
        self.draining = False
        self.fail_with: Exception | None = None
        self._seq = 0

    def pause_for(self, job: Job) -> recovery.Pause | None:
        return None  # creates never pause here: no Vertex behind this fake

    def _next(self) -> tuple[str, float]:
        self._seq += 1
        return f"job-{self._seq:04d}", T0 + self._seq

    def _event(self, job: Job, from_state: LocalState | None, reason: str) -> None:
        events = self.events.setdefault(job.id, [])
        events.append(JobEvent(job.id, len(events) + 1, job.updated_at, from_state, job.state,
                               reason))

    def add(self, project: str = "proj-a", location: str = "us-central1",
            spec: Mapping[str, Any] | None = None, **fields: Any) -> Job:
        """Seed a job in any state, as the engine would have stored it."""
        job_id, now = self._next()
        spec = dict(spec if spec is not None else wire.parse_tuning_job(VALID_JOB))
        job = Job(id=job_id, project=project, location=location, spec_json=json.dumps(spec),
                  base_model=str(spec.get("baseModel", "")), state=LocalState.QUEUED,
                  created_at=now, updated_at=now,
                  display_name=str(spec.get("tunedModelDisplayName", "")))
        self.jobs[job_id] = job
        self._event(job, None, "submitted")
        if fields:
            before = job.state
            job = job.evolve(**fields)
            self.jobs[job_id] = job
            if job.state is not before:
                self._event(job, before, "seeded")
        return job

    async def submit(self, project: str, location: str, spec: Mapping[str, Any], *,
                     priority: int = 0, request_id: str | None = None,
                     api_version: str | None = None) -> tuple[Job, bool]:
        if self.fail_with is not None:
            raise self.fail_with
        if self.draining:
            raise Unavailable("draining")
        self.submits.append({"project": project, "location": location, "spec": dict(spec),
                             "priority": priority, "request_id": request_id,
                             "api_version": api_version})
        for job in self.jobs.values():
            if request_id is not None and (job.project, job.location, job.request_id) == (
                    project, location, request_id):
                return job, False
        job = self.add(project, location, spec, priority=priority, request_id=request_id,
                       api_version=api_version)
        return job, True

    async def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    async def history(self, job_id: str) -> list[JobEvent]:
        return list(self.events.get(job_id, []))

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return sorted(i for i in self.jobs if i.startswith(prefix))[:limit]

    async def list_jobs(self, project: str | None, location: str | None, *,
                        predicate: JobPredicate | None,
                        page_size: int, after_key: str | None,
                        states: frozenset[LocalState] | None = None,
                        labels: Mapping[str, str] | None = None) -> Page:
        ordered = sorted((j for j in self.jobs.values()
                          if project in (None, j.project) and location in (None, j.location)
                          and (states is None or j.state in states)
                          and all((j.spec.get("labels") or {}).get(k) == v
                                  for k, v in (labels or {}).items())),
                         key=lambda j: (j.created_at, j.id), reverse=True)
        if after_key is not None:
            ordered = [j for j in ordered if j.id < after_key]
        matching = [j for j in ordered if predicate is None or predicate(j)]
        page = matching[:page_size]
        more = len(matching) > page_size
        return Page(jobs=page, next_key=page[-1].id if more else None)

    async def cancel(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job.state.is_terminal:
            raise FailedPrecondition(f"Tuning job {job_id} has already ended ({job.state}).")
        before = job.state
        if job.state is LocalState.QUEUED:
            job = job.evolve(state=LocalState.CANCELLED, cancel_requested=True,
                             ended_at=job.updated_at + 1, updated_at=job.updated_at + 1,
                             outcome=Outcome.CANCELLED_LOCALLY)
        else:
            job = job.evolve(state=LocalState.CANCELLING, cancel_requested=True)
        self.jobs[job_id] = job
        self._event(job, before, "cancel requested")
        return job

    def queue_position(self, job: Job) -> int | None:
        if job.state is not LocalState.QUEUED:
            return None
        queued = sorted((j for j in self.jobs.values() if j.state is LocalState.QUEUED),
                        key=lambda j: j.created_at)
        return [j.id for j in queued].index(job.id) + 1

    def ready(self) -> bool:
        return self.is_ready and not self.draining


Factory = Callable[..., Awaitable[tuple[TestClient[web.Request, web.Application], FakeEngine]]]


@pytest.fixture
async def api() -> AsyncIterator[Factory]:
    """Start the API on a loopback test server with a fresh fake engine (keyword args go to
    make_api_app)."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(engine: FakeEngine | None = None, **kwargs: Any) -> tuple[
            TestClient[web.Request, web.Application], FakeEngine]:
        engine = engine if engine is not None else FakeEngine()
        client = TestClient(TestServer(make_api_app(engine, **kwargs)))
        await client.start_server()
        clients.append(client)
        return client, engine

    yield start
    for client in clients:
        await client.close()


async def assert_error(resp: Any, http_status: int, status: str) -> dict[str, Any]:
    """Check Google's envelope and return its `error` object."""
    assert resp.status == http_status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == http_status
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    return error


# --------------------------------------------------------------------------------------------
# Create


async def test_create_camel_case_v1_returns_queued_job(api: Factory) -> None:
    """A camelCase create on v1 answers the TuningJob view with tuningd's name and QUEUED."""
    client, engine = await api()
    resp = await client.post(BASE, json=VALID_JOB)
    assert resp.status == 200
    body = await resp.json()
    job_id = body["name"].rsplit("/", 1)[-1]
    assert body["name"] == f"projects/proj-a/locations/us-central1/tuningJobs/{job_id}"
    assert body["state"] == "JOB_STATE_QUEUED"
    assert body["baseModel"] == "gemini-2.5-flash"
    assert body["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": "3", "adapterSize": "ADAPTER_SIZE_FOUR"}
    assert body["labels"] == {"team": "nlp"}
    assert body["createTime"].endswith("Z") and body["updateTime"].endswith("Z")
    assert body["tuningd"] == {"state": "queued", "priority": 0, "attempts": 0,
                               "cancelRequested": False, "queuePosition": 1,
                               "apiVersion": "v1"}
    assert engine.submits[0]["api_version"] == "v1"
    assert engine.submits[0]["spec"]["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": 3, "adapterSize": "ADAPTER_SIZE_FOUR"}
    assert engine.submits[0]["project"] == "proj-a"


async def test_create_snake_case_v1beta1_from_docs_example(api: Factory) -> None:
    """The snake_case body from Google's docs is accepted on v1beta1 and normalised."""
    client, engine = await api()
    raw = (EXAMPLES / "request-advanced.json").read_bytes()
    resp = await client.post(BETA, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["supervisedTuningSpec"]["hyperParameters"]["epochCount"] == "4"
    assert body["supervisedTuningSpec"]["validationDatasetUri"].startswith("gs://")
    assert engine.submits[0]["spec"]["supervisedTuningSpec"]["hyperParameters"][
        "learningRateMultiplier"] == 1.0


async def test_int_enums_in_and_out(api: Factory) -> None:
    """GAPIC-style int enums are accepted, stored as names and rendered as ints on request."""
    client, engine = await api()
    gapic = json.loads(json.dumps(VALID_JOB))
    gapic["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] = 2
    resp = await client.post(BETA, json=gapic, params=INT_ENUMS)
    assert resp.status == 200
    body = await resp.json()
    assert body["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == 2
    assert body["state"] == 1
    stored = engine.submits[0]["spec"]["supervisedTuningSpec"]["hyperParameters"]
    assert stored["adapterSize"] == "ADAPTER_SIZE_FOUR"
    plain = await (await client.get(f"{BETA}/{body['name'].rsplit('/', 1)[-1]}")).json()
    assert plain["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_FOUR"
    assert plain["state"] == "JOB_STATE_QUEUED"


async def test_output_only_fields_in_create_body_are_ignored(api: Factory) -> None:
    """A fetched job re-POSTed (name, state, times) creates a new job without those fields."""
    client, engine = await api()
    body = {**VALID_JOB, "name": "projects/x/locations/y/tuningJobs/1",
            "state": "JOB_STATE_SUCCEEDED", "createTime": "2020-01-01T00:00:00Z"}
    resp = await client.post(BASE, json=body)
    assert resp.status == 200
    spec = engine.submits[0]["spec"]
    assert "name" not in spec and "state" not in spec and "createTime" not in spec
    assert (await resp.json())["state"] == "JOB_STATE_QUEUED"


async def test_request_id_is_idempotent(api: Factory) -> None:
    """The same requestId twice yields the same job and passes the id through to the engine."""
    client, engine = await api()
    rid = "3f1c2b8e-9a1d-4c55-9a53-2f1e0c6d8b11"
    first = await (await client.post(BASE, json=VALID_JOB, params={"requestId": rid})).json()
    second = await (await client.post(BASE, json=VALID_JOB, params={"requestId": rid})).json()
    assert first["name"] == second["name"]
    assert len(engine.jobs) == 1
    assert [s["request_id"] for s in engine.submits] == [rid, rid]
    assert first["tuningd"]["requestId"] == rid


@pytest.mark.parametrize(("raw", "expected"), [(None, 0), ("7", 7), ("-3", -3), ("2147483647",
                                                                                2147483647)])
async def test_priority_parsing(api: Factory, raw: str | None, expected: int) -> None:
    """The priority query parameter reaches the engine as an int32 (0 when absent)."""
    client, engine = await api()
    params = {"priority": raw} if raw is not None else {}
    resp = await client.post(BASE, json=VALID_JOB, params=params)
    assert resp.status == 200
    assert engine.submits[0]["priority"] == expected
    assert (await resp.json())["tuningd"]["priority"] == expected


def _with(path: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(VALID_JOB))
    target = body
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return body


_DELETE = object()

def _raw(path: str, value: Any) -> bytes:
    return json.dumps(_with(path, value)).encode()


HYPER = "supervisedTuningSpec.hyperParameters"
BAD_BODIES: list[tuple[str, bytes]] = [
    ("malformed json", b'{"baseModel": '),
    ("not an object", b'["gemini-2.5-flash"]'),
    ("empty body", b""),
    ("missing base model", _raw("baseModel", _DELETE)),
    ("missing training data", _raw("supervisedTuningSpec.trainingDatasetUri", _DELETE)),
    ("bad enum", _raw(f"{HYPER}.adapterSize", "ADAPTER_SIZE_HUGE")),
    ("bad int enum", _raw(f"{HYPER}.adapterSize", 99)),
    ("unknown field", _raw("supervisedTuningSpec.colour", "red")),
    ("129-char display name", _raw("tunedModelDisplayName", "x" * 129)),
    ("negative epoch count", _raw(f"{HYPER}.epochCount", "-1")),
    ("bad label key", _raw("labels", {"Team": "nlp"})),
    ("reserved label tuningd-job-id", _raw("labels", {"tuningd-job-id": "x"})),
    ("reserved label tuningd- prefix", _raw("labels", {"tuningd-foo": "x"})),
]


@pytest.mark.parametrize(("case", "raw"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_bad_create_bodies_are_400_and_never_submitted(api: Factory, case: str,
                                                             raw: bytes) -> None:
    """Every invalid create body answers 400 INVALID_ARGUMENT and the engine sees no submit."""
    client, engine = await api()
    resp = await client.post(BASE, data=raw, headers={"Content-Type": "application/json"})
    await assert_error(resp, 400, "INVALID_ARGUMENT")
    assert engine.submits == []


async def test_v1beta1_only_field_is_unknown_on_v1(api: Factory) -> None:
    """A v1beta1-only spec field (tuningMode) is accepted on v1beta1 and refused on v1."""
    client, engine = await api()
    body = _with("supervisedTuningSpec.tuningMode", "TUNING_MODE_PEFT_ADAPTER")
    await assert_error(await client.post(BASE, json=body), 400, "INVALID_ARGUMENT")
    assert engine.submits == []
    assert (await client.post(BETA, json=body)).status == 200


async def test_unknown_model_is_forwarded_by_default_and_refused_when_configured(
        api: Factory) -> None:
    """A base model missing from the catalog is queued for Vertex to judge by default, and
    answered 400 at once with models.unknown = "refuse"."""
    body = _with("baseModel", "gemini-flash-latest")
    client, engine = await api()
    assert (await client.post(BASE, json=body)).status == 200
    assert engine.submits[0]["spec"]["baseModel"] == "gemini-flash-latest"
    refusing = models.ModelCatalog(models.DEFAULT_CATALOG.models,
                                   unknown=models.UnknownModels.REFUSE)
    client, engine = await api(catalog=lambda: refusing)
    await assert_error(await client.post(BASE, json=body), 400, "INVALID_ARGUMENT")
    assert engine.submits == []


async def test_managed_by_label_is_the_clients(api: Factory) -> None:
    """`managed-by` is an ordinary label: accepted, queued as sent and shown back."""
    client, engine = await api()
    resp = await client.post(BASE, json=_with("labels", {"managed-by": "terraform"}))
    assert resp.status == 200
    assert (await resp.json())["labels"] == {"managed-by": "terraform"}
    assert engine.submits[0]["spec"]["labels"] == {"managed-by": "terraform"}


BAD_QUERIES: list[dict[str, str]] = [
    {"priority": "abc"}, {"priority": "1.5"}, {"priority": "99999999999"}, {"priority": ""},
    {"priority": "1_000"}, {"priority": " 5"}, {"priority": "2147483648"},
    {"requestId": "x" * 65}, {"requestId": "has space"}, {"requestId": ""},
    {"requestId": "a/b"}, {"requestId": "ünïcode"},
]


@pytest.mark.parametrize("params", BAD_QUERIES, ids=[json.dumps(q) for q in BAD_QUERIES])
async def test_bad_priority_or_request_id_is_400(api: Factory, params: dict[str, str]) -> None:
    """A non-int32 priority or a malformed requestId answers 400 before anything is queued."""
    client, engine = await api()
    await assert_error(await client.post(BASE, json=VALID_JOB, params=params), 400,
                       "INVALID_ARGUMENT")
    assert engine.submits == []


async def test_request_id_of_64_chars_is_accepted(api: Factory) -> None:
    """A requestId of exactly 64 allowed characters is accepted."""
    client, engine = await api()
    rid = "A_z-9" * 12 + "abcd"
    assert (await client.post(BASE, json=VALID_JOB, params={"requestId": rid})).status == 200
    assert engine.submits[0]["request_id"] == rid


async def test_oversize_body_is_413_in_envelope(api: Factory) -> None:
    """A body over max_body_bytes answers 413 with status INVALID_ARGUMENT and is not queued."""
    client, engine = await api(max_body_bytes=2048)
    body = _with("description", "d" * 4096)
    error = await assert_error(await client.post(BASE, json=body), 413, "INVALID_ARGUMENT")
    assert "2048" in error["message"]
    assert engine.submits == []


async def test_engine_error_during_submit_is_enveloped(api: Factory) -> None:
    """A TuningdError raised by the engine keeps its status in the envelope."""
    engine = FakeEngine()
    engine.fail_with = FailedPrecondition("the queue is full")
    client, _ = await api(engine)
    error = await assert_error(await client.post(BASE, json=VALID_JOB), 400,
                               "FAILED_PRECONDITION")
    assert error["message"] == "the queue is full"


async def test_unexpected_exception_is_500_without_internals(api: Factory) -> None:
    """An unexpected exception answers 500 INTERNAL without leaking its text."""
    engine = FakeEngine()
    engine.fail_with = RuntimeError("sqlite at /var/lib/tuningd/secret.db exploded")
    client, _ = await api(engine)
    error = await assert_error(await client.post(BASE, json=VALID_JOB), 500, "INTERNAL")
    assert "sqlite" not in error["message"] and "secret" not in error["message"]


# --------------------------------------------------------------------------------------------
# Get, cancel, not found


async def test_get_includes_history_and_extension(api: Factory) -> None:
    """GET shows the tuningd object with history, queue position and request id."""
    client, engine = await api()
    engine.add()
    job = engine.add(request_id="r1", priority=5)
    body = await (await client.get(f"{BASE}/{job.id}")).json()
    ext = body["tuningd"]
    assert ext["queuePosition"] == 2
    assert ext["priority"] == 5 and ext["requestId"] == "r1"
    assert ext["history"] == [{"time": wire.format_timestamp(job.created_at), "from": None,
                               "to": "queued", "reason": "submitted"}]


@pytest.mark.parametrize("path", [
    f"{BASE}/job-9999",
    f"{BASE}/job-9999:cancel",
    "/v1/projects/proj-b/locations/us-central1/tuningJobs/job-0001",
    "/v1/projects/proj-a/locations/europe-west4/tuningJobs/job-0001",
    "/v1/projects/proj-b/locations/us-central1/tuningJobs/job-0001:cancel",
    "/v1/tuningd/jobs/job-9999",
])
async def test_unknown_or_foreign_job_is_404(api: Factory, path: str) -> None:
    """Unknown ids, and ids of another project/location path, answer 404 NOT_FOUND."""
    client, engine = await api()
    engine.add()
    method = client.post if path.endswith(":cancel") else client.get
    await assert_error(await method(path), 404, "NOT_FOUND")
    assert engine.jobs["job-0001"].state is LocalState.QUEUED


async def test_cancel_queued_job_then_again(api: Factory) -> None:
    """Cancel answers {}; the job shows CANCELLED with error code 1; a second cancel is 400."""
    client, engine = await api()
    job = engine.add()
    resp = await client.post(f"{BASE}/{job.id}:cancel")
    assert resp.status == 200
    assert await resp.json() == {}
    body = await (await client.get(f"{BASE}/{job.id}")).json()
    assert body["state"] == "JOB_STATE_CANCELLED"
    assert body["error"] == {"code": 1, "message": "Tuning job was cancelled."}
    assert body["endTime"] == wire.format_timestamp(job.updated_at + 1)
    assert body["tuningd"]["outcome"] == "cancelled_locally"
    assert "queuePosition" not in body["tuningd"]
    again = await client.post(f"{BASE}/{job.id}:cancel", json={})
    await assert_error(again, 400, "FAILED_PRECONDITION")


async def test_cancel_with_malformed_body_is_400(api: Factory) -> None:
    """A cancel with a body that is not JSON is refused and changes nothing."""
    client, engine = await api()
    job = engine.add()
    resp = await client.post(f"{BASE}/{job.id}:cancel", data=b"{nope")
    await assert_error(resp, 400, "INVALID_ARGUMENT")
    assert engine.jobs[job.id].state is LocalState.QUEUED


async def test_lookup_route_finds_job_by_bare_id(api: Factory) -> None:
    """GET /v1/tuningd/jobs/{id} shows a job of any project with its history."""
    client, engine = await api()
    job = engine.add(project="proj-z", location="europe-west4")
    body = await (await client.get(f"/v1/tuningd/jobs/{job.id}")).json()
    assert body["name"] == f"projects/proj-z/locations/europe-west4/tuningJobs/{job.id}"
    assert body["tuningd"]["history"]


# --------------------------------------------------------------------------------------------
# The view of jobs Vertex knows


REMOTE_SUCCEEDED: dict[str, Any] = {
    "name": "projects/123456789012/locations/us-central1/tuningJobs/4982013113894174720",
    "baseModel": "gemini-2.5-flash",
    "labels": {"team": "nlp", "tuningd-job-id": "job-0001", "managed-by": "tuningd"},
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/sft/train.jsonl",
                             "hyperParameters": {"epochCount": 3, "adapterSize":
                                                 "ADAPTER_SIZE_FOUR",
                                                 "learningRateMultiplier": 1.0}},
    "state": "JOB_STATE_SUCCEEDED",
    "createTime": "2025-06-02T10:15:03.418225Z",
    "startTime": "2025-06-02T10:19:41.002817Z",
    "endTime": "2025-06-02T11:02:55.610394Z",
    "updateTime": "2025-06-02T11:02:55.610394Z",
    "experiment": "projects/123456789012/locations/us-central1/metadataStores/default/"
                  "contexts/tuning-experiment-1",
    "tunedModel": {"model": "projects/123456789012/locations/us-central1/models/1@1",
                   "endpoint": "projects/123456789012/locations/us-central1/endpoints/2"},
    "tuningDataStats": {"supervisedTuningDataStats": {"tuningDatasetExampleCount": 500}},
    "tuningJobState": "TUNING_JOB_STATE_POST_PROCESSING",
    "tuningJobMetadata": {"completedEpochCount": 3},
}


def _succeeded_job() -> Job:
    spec = wire.parse_tuning_job(_with("supervisedTuningSpec.hyperParameters", {"epochCount": 3}))
    return Job(id="job-0042", project="proj-a", location="us-central1",
               spec_json=json.dumps(spec), base_model="gemini-2.5-flash",
               state=LocalState.SUCCEEDED, created_at=T0, updated_at=T0 + 3600, attempts=1,
               remote_name=REMOTE_SUCCEEDED["name"], remote_state="JOB_STATE_SUCCEEDED",
               remote_json=json.dumps(REMOTE_SUCCEEDED), ended_at=T0 + 3500,
               outcome=Outcome.NORMAL)


def test_job_view_mirrors_remote_outputs() -> None:
    """A succeeded job shows Vertex's copy with tuningd's name, times and the client's labels."""
    view = job_view(_succeeded_job(), queue_position=None, history=None)
    assert view["name"] == "projects/proj-a/locations/us-central1/tuningJobs/job-0042"
    assert view["state"] == "JOB_STATE_SUCCEEDED"
    assert view["labels"] == {"team": "nlp"}
    assert view["createTime"] == wire.format_timestamp(T0)
    for key in ("tunedModel", "experiment", "tuningDataStats", "startTime", "endTime",
                "tuningJobState", "tuningJobMetadata"):
        assert view[key] == REMOTE_SUCCEEDED[key]
    assert view["supervisedTuningSpec"] == REMOTE_SUCCEEDED["supervisedTuningSpec"]
    assert "error" not in view
    assert view["tuningd"] == {"state": "succeeded", "priority": 0, "attempts": 1,
                               "cancelRequested": False, "remoteName": REMOTE_SUCCEEDED["name"],
                               "remoteState": "JOB_STATE_SUCCEEDED", "outcome": "normal"}


def test_job_view_never_merges_the_clients_values_into_vertexs() -> None:
    """A v1beta1 job sent with learningRate shows only what Vertex returned (here its
    learningRateMultiplier), never both; before Vertex has it, the request as accepted."""
    sent = _with("supervisedTuningSpec.hyperParameters", {"learningRate": 0.0002})
    job = _succeeded_job().evolve(spec_json=json.dumps(
        wire.parse_tuning_job(sent, api_version="v1beta1")), api_version="v1beta1")
    hyper = job_view(job)["supervisedTuningSpec"]["hyperParameters"]
    assert hyper == REMOTE_SUCCEEDED["supervisedTuningSpec"]["hyperParameters"]
    queued = job.evolve(state=LocalState.QUEUED, remote_json=None, remote_name=None,
                        remote_state=None, ended_at=None, outcome=None)
    view = job_view(queued)
    assert view["supervisedTuningSpec"]["hyperParameters"] == {"learningRate": 0.0002}
    assert not {"tunedModel", "experiment", "startTime", "endTime", "tuningJobState"} & set(view)


def test_job_view_of_failed_job_without_remote_uses_local_error() -> None:
    """A job rejected before Vertex had it shows error and endTime from tuningd's record."""
    job = _succeeded_job().evolve(state=LocalState.FAILED, remote_json=None, remote_name=None,
                                  error_code=3, error_message="The adapter size is not "
                                  "supported for this base model.", outcome=Outcome.REJECTED)
    view = job_view(job)
    assert view["error"] == {"code": 3, "message": "The adapter size is not supported for this "
                                                   "base model."}
    assert view["endTime"] == wire.format_timestamp(T0 + 3500)
    assert "tunedModel" not in view and "startTime" not in view


def test_job_view_of_failed_job_prefers_remote_error() -> None:
    """A job Vertex failed shows Vertex's own error object."""
    remote = {**REMOTE_SUCCEEDED, "state": "JOB_STATE_FAILED",
              "error": {"code": 3, "message": "Invalid dataset: line 17."}}
    del remote["tunedModel"]
    job = _succeeded_job().evolve(state=LocalState.FAILED, remote_json=json.dumps(remote),
                                  error_code=13, error_message="local text")
    assert job_view(job)["error"] == {"code": 3, "message": "Invalid dataset: line 17."}


async def test_v1_drops_beta_fields_and_v1beta1_keeps_them(api: Factory) -> None:
    """tuningJobState/tuningJobMetadata appear on v1beta1 only; int enums work on mirrored ones."""
    client, engine = await api()
    job = _succeeded_job()
    engine.jobs[job.id] = job
    v1 = await (await client.get(f"{BASE}/{job.id}")).json()
    beta = await (await client.get(f"{BETA}/{job.id}", params=INT_ENUMS)).json()
    assert "tuningJobState" not in v1 and "tuningJobMetadata" not in v1
    assert v1["tunedModel"] == REMOTE_SUCCEEDED["tunedModel"]
    assert v1["tuningDataStats"] == {"supervisedTuningDataStats": {
        "tuningDatasetExampleCount": "500"}}
    assert beta["tuningJobState"] == 5
    assert beta["tuningJobMetadata"] == {"completedEpochCount": "3"}
    assert beta["state"] == 4


# --------------------------------------------------------------------------------------------
# List: filters and pages


async def test_empty_list_is_empty_object(api: Factory) -> None:
    """A list with no jobs answers {} exactly."""
    client, _ = await api()
    resp = await client.get(BASE)
    assert resp.status == 200
    assert await resp.json() == {}


async def test_list_filters_on_the_vertex_view(api: Factory) -> None:
    """Filters by state, labels and display_name work on the TuningJob view of each job."""
    client, engine = await api()
    nlp = engine.add()
    done = engine.add(spec=wire.parse_tuning_job(_with("labels", {"team": "cv"})),
                      state=LocalState.SUCCEEDED)
    engine.add(project="proj-b")

    async def ids(flt: str) -> list[str]:
        body = await (await client.get(BASE, params={"filter": flt})).json()
        return [j["name"].rsplit("/", 1)[-1] for j in body.get("tuningJobs", [])]

    assert await ids("") == [done.id, nlp.id]
    assert await ids("state=JOB_STATE_SUCCEEDED") == [done.id]
    assert await ids('state="JOB_STATE_QUEUED"') == [nlp.id]
    assert await ids("labels.team=nlp") == [nlp.id]
    assert await ids("labels.team:*") == [done.id, nlp.id]
    assert await ids('display_name="sentiment-v3" AND NOT labels.team=cv') == [nlp.id]
    assert await ids("labels.team=nobody") == []


async def test_list_items_have_no_history(api: Factory) -> None:
    """List items carry the tuningd object without history."""
    client, engine = await api()
    engine.add()
    body = await (await client.get(BASE)).json()
    ext = body["tuningJobs"][0]["tuningd"]
    assert "history" not in ext and ext["queuePosition"] == 1


async def test_pagination_walks_every_job_once(api: Factory) -> None:
    """pageSize=2 over five jobs gives three pages, newest first, the last without a token."""
    client, engine = await api()
    created = [engine.add().id for _ in range(5)]
    seen: list[str] = []
    params = {"pageSize": "2"}
    pages = 0
    while True:
        body = await (await client.get(BASE, params=params)).json()
        pages += 1
        seen += [j["name"].rsplit("/", 1)[-1] for j in body["tuningJobs"]]
        if "nextPageToken" not in body:
            break
        params["pageToken"] = body["nextPageToken"]
    assert pages == 3
    assert seen == list(reversed(created))


async def test_page_token_is_bound_to_its_filter(api: Factory) -> None:
    """A page token replayed with a different filter answers 400."""
    client, engine = await api()
    for _ in range(3):
        engine.add()
    body = await (await client.get(BASE, params={"pageSize": "1"})).json()
    resp = await client.get(BASE, params={"pageToken": body["nextPageToken"],
                                          "filter": "labels.team=nlp"})
    await assert_error(resp, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("params", [
    {"filter": "state=="}, {"filter": "(labels.team=nlp"}, {"filter": "AND"},
    {"pageToken": "not-a-token"}, {"pageSize": "-1"}, {"pageSize": "ten"},
    {"page_size": "1.5"},
], ids=str)
async def test_bad_list_parameters_are_400(api: Factory, params: dict[str, str]) -> None:
    """Unparseable filters, forged page tokens and bad page sizes answer 400 INVALID_ARGUMENT."""
    client, engine = await api()
    engine.add()
    await assert_error(await client.get(BASE, params=params), 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------------------------
# Security, draining, probes


async def test_token_auth(api: Factory) -> None:
    """A configured token is required on the API (401 when missing or wrong) but not on probes."""
    secret = "s3cr3t-token-value"
    client, engine = await api(token=secret, metrics_handler=_metrics_handler)
    missing = await client.get(BASE)
    error = await assert_error(missing, 401, "UNAUTHENTICATED")
    assert error["message"].startswith("Request had invalid authentication credentials.")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await client.post(BASE, json=VALID_JOB, headers={"Authorization": "Bearer nope"})
    assert secret not in await wrong.text()
    await assert_error(wrong, 401, "UNAUTHENTICATED")
    basic = await client.get(BASE, headers={"Authorization": f"Basic {secret}"})
    await assert_error(basic, 401, "UNAUTHENTICATED")
    await assert_error(await client.get("/openapi.json"), 401, "UNAUTHENTICATED")
    await assert_error(await client.get("/nowhere"), 401, "UNAUTHENTICATED")
    assert engine.submits == []
    good = {"Authorization": f"Bearer {secret}"}
    assert (await client.post(BASE, json=VALID_JOB, headers=good)).status == 200
    assert (await client.get("/openapi.json", headers=good)).status == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200, path


def test_empty_token_is_refused() -> None:
    """An empty token is a configuration error, not a token that every request matches."""
    with pytest.raises(ConfigError):
        make_api_app(FakeEngine(), token="")


async def test_allow_lists_are_403(api: Factory) -> None:
    """Projects and locations outside the allow-lists answer 403 PERMISSION_DENIED."""
    client, engine = await api(allowed_projects=["proj-a"], allowed_locations=["us-central1"])
    other_project = "/v1/projects/proj-b/locations/us-central1/tuningJobs"
    other_location = "/v1/projects/proj-a/locations/europe-west4/tuningJobs"
    await assert_error(await client.post(other_project, json=VALID_JOB), 403, "PERMISSION_DENIED")
    await assert_error(await client.post(other_location, json=VALID_JOB), 403,
                       "PERMISSION_DENIED")
    await assert_error(await client.get(other_project), 403, "PERMISSION_DENIED")
    await assert_error(await client.get(f"{other_location}/job-0001"), 403, "PERMISSION_DENIED")
    assert engine.submits == []
    foreign = engine.add(project="proj-b")
    await assert_error(await client.get(f"/v1/tuningd/jobs/{foreign.id}"), 403,
                       "PERMISSION_DENIED")
    assert (await client.post(BASE, json=VALID_JOB)).status == 200


async def test_draining_refuses_creates_only(api: Factory) -> None:
    """While draining, creates answer 503 UNAVAILABLE but reads and cancels still work."""
    client, engine = await api()
    job = engine.add()
    engine.draining = True
    await assert_error(await client.post(BASE, json=VALID_JOB), 503, "UNAVAILABLE")
    assert engine.submits == []
    assert (await client.get(f"{BASE}/{job.id}")).status == 200
    assert (await client.post(f"{BASE}/{job.id}:cancel")).status == 200


async def test_healthz(api: Factory) -> None:
    """/healthz answers 200 {"status": "ok"} even when the engine is not ready."""
    engine = FakeEngine()
    engine.is_ready = False
    client, _ = await api(engine)
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_readyz(api: Factory) -> None:
    """/readyz is 200 when all is well and 503 naming every failing check otherwise: Google's
    error envelope, and beside it `reasons` (one per failing check) and every check's state."""
    checks: dict[str, bool | str] = {"store": True, "credentials": True}

    async def readiness() -> dict[str, bool | str]:
        return checks

    client, engine = await api(readiness=readiness)
    ok = await client.get("/readyz")
    assert ok.status == 200
    assert await ok.json() == {"status": "ready", "checks": {"engine": "ok", "store": "ok",
                                                             "credentials": "ok"}}
    checks["credentials"] = "token refresh failed"
    checks["store"] = False
    engine.is_ready = False
    not_ready = await client.get("/readyz")
    assert not_ready.status == 503
    body = await not_ready.json()
    error = body["error"]
    assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
    assert "credentials: token refresh failed" in error["message"]
    assert error["details"][0]["metadata"] == {"engine": "starting", "store": "failed",
                                               "credentials": "token refresh failed"}
    assert body["status"] == "not_ready"
    assert body["reasons"] == [{"check": "credentials", "reason": "token refresh failed"},
                               {"check": "engine", "reason": "starting"},
                               {"check": "store", "reason": "failed"}]
    assert body["checks"] == {"engine": "starting", "store": "failed",
                              "credentials": "token refresh failed"}
    engine.is_ready, engine.draining = True, True
    checks.update(store=True, credentials=True)
    draining = await (await client.get("/readyz")).json()
    assert draining["error"]["details"][0]["metadata"] == {"engine": "draining"}
    assert draining["checks"] == {"engine": "draining", "store": "ok", "credentials": "ok"}


async def test_readyz_with_crashing_check_is_503(api: Factory) -> None:
    """A readiness callback that raises makes /readyz 503, not 500."""
    async def readiness() -> dict[str, bool | str]:
        raise OSError("disk gone")

    client, _ = await api(readiness=readiness)
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"]["status"] == "UNAVAILABLE"
    assert body["reasons"] == [{"check": "readiness", "reason": "check failed: OSError"}]


async def test_unknown_route_and_wrong_method_are_enveloped(api: Factory) -> None:
    """Unknown paths and unmapped methods answer 404 NOT_FOUND in Google's envelope, as Vertex
    and the emulator do ("Method not found." for a known path)."""
    client, _ = await api()
    await assert_error(await client.get("/v2/projects/p/locations/l/tuningJobs"), 404,
                       "NOT_FOUND")
    await assert_error(await client.get("/metrics"), 404, "NOT_FOUND")
    for method, path in (("DELETE", f"{BASE}/job-0001"), ("GET", f"{BASE}/job-0001:cancel"),
                         ("PUT", BASE), ("PATCH", f"{BETA}/job-0001"), ("OPTIONS", BASE),
                         ("POST", "/healthz")):
        resp = await client.request(method, path)
        error = await assert_error(resp, 404, "NOT_FOUND")
        assert error["message"] == "Method not found.", (method, path)
        assert "Allow" not in resp.headers
    head = await client.head(BASE)
    assert head.status == 404 and head.headers["Content-Type"] == "application/json; charset=UTF-8"


async def _metrics_handler(request: web.Request) -> web.Response:
    return web.Response(text="tuningd_up 1\n", content_type="text/plain")


async def test_metrics_handler_and_request_observer(api: Factory) -> None:
    """The injected /metrics handler is served and each request is observed by route template."""
    seen: list[tuple[str, str, int]] = []
    client, engine = await api(metrics_handler=_metrics_handler,
                               observe_request=lambda m, r, s: seen.append((m, r, s)))
    job = engine.add()
    assert await (await client.get("/metrics")).text() == "tuningd_up 1\n"
    await client.get(f"{BASE}/{job.id}")
    await client.get("/nowhere")
    assert seen == [
        ("GET", "/metrics", 200),
        ("GET", "/v1/projects/{project}/locations/{location}/tuningJobs/{id}", 200),
        ("GET", "unmatched", 404),
    ]


async def test_one_log_line_per_request_without_secrets(api: Factory) -> None:
    """Each request logs one line with method, path, status and duration; never the token."""
    secret = "very-secret-token"
    client, _ = await api(token=secret)
    with structlog.testing.capture_logs() as logs:
        await client.get(BASE, headers={"Authorization": f"Bearer {secret}"})
        await client.get(BASE, headers={"Authorization": "Bearer wrong"})
    lines = [e for e in logs if e["event"] == "request.answered"]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", BASE, 200), ("GET", BASE, 401)]
    assert all(isinstance(e["duration_ms"], float) for e in lines)
    assert secret not in repr(logs) and "wrong" not in repr(logs)


# --------------------------------------------------------------------------------------------
# OpenAPI


def _described(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def _registered(app: web.Application) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None}


@pytest.mark.parametrize("configured", [{}, {"token": "t", "metrics_handler": _metrics_handler}],
                         ids=["bare", "token+metrics"])
async def test_openapi_describes_exactly_the_routes(api: Factory,
                                                    configured: dict[str, Any]) -> None:
    """Every aiohttp route is in /openapi.json and every described operation is a route."""
    client, _ = await api(**configured)
    headers = {"Authorization": "Bearer t"} if "token" in configured else {}
    doc = await (await client.get("/openapi.json", headers=headers)).json()
    assert doc["openapi"].startswith("3.0")
    assert _described(doc) == _registered(client.app)
    for path, ops in doc["paths"].items():
        placeholders = {p.strip("{}") for p in re.findall(r"\{[^}]+\}", path)}
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == placeholders, path
            assert "200" in op["responses"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"])
    assert "ErrorEnvelope" in refs
    assert ("securitySchemes" in doc["components"]) == ("token" in configured)


# --------------------------------------------------------------------------------------------
# An official client library, with only the host changed


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_google_genai_client_works_against_the_api(api: Factory, version: str) -> None:
    """google-genai (async) creates, gets, lists (paged) and cancels through tuningd."""
    genai = pytest.importorskip("google.genai")
    from google.genai import types
    from google.oauth2.credentials import Credentials

    client, engine = await api(token="tok")
    sdk = genai.Client(vertexai=True, project="proj-a", location="us-central1",
                       credentials=Credentials(token="tok"),
                       http_options=types.HttpOptions(base_url=str(client.make_url("/")),
                                                      api_version=version))
    engine.add()
    with warnings.catch_warnings():  # tune() is marked experimental
        warnings.simplefilter("ignore")
        job = await sdk.aio.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri="gs://my-bucket/train.jsonl"),
            config=types.CreateTuningJobConfig(tuned_model_display_name="x", epoch_count=3,
                                               adapter_size="ADAPTER_SIZE_FOUR"))
    assert job.state == types.JobState.JOB_STATE_QUEUED
    assert engine.submits[0]["spec"]["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": 3, "adapterSize": "ADAPTER_SIZE_FOUR"}
    names = [j.name async for j in await sdk.aio.tunings.list(config={"page_size": 1})]
    assert names == [job.name, "projects/proj-a/locations/us-central1/tuningJobs/job-0001"]
    await sdk.aio.tunings.cancel(name=job.name)
    fetched = await sdk.aio.tunings.get(name=job.name)
    assert fetched.state == types.JobState.JOB_STATE_CANCELLED
    assert fetched.error is not None and fetched.error.code == 1


# --------------------------------------------------------------------------------------------
# Robustness and wire fidelity (regressions)

HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("duplicate key", b'{"baseModel":"gemini-2.5-flash","baseModel":"gemini-2.0-flash-001",'
                      b'"supervisedTuningSpec":{"trainingDatasetUri":"gs://b/t.jsonl"}}'),
    ("5000-digit number", b'{"baseModel":"gemini-2.5-flash","supervisedTuningSpec":{'
                          b'"trainingDatasetUri":"gs://b/t.jsonl","hyperParameters":'
                          b'{"epochCount":1' + b"0" * 5000 + b"}}}"),
    ("double overflow", b'{"baseModel":"gemini-2.5-flash","supervisedTuningSpec":{'
                        b'"trainingDatasetUri":"gs://b/t.jsonl","evaluationConfig":{"x":1e999}}}'),
    ("deep struct", b'{"baseModel":"gemini-2.5-flash","supervisedTuningSpec":{'
                    b'"trainingDatasetUri":"gs://b/t.jsonl","evaluationConfig":'
                    + b'{"a":' * 700 + b"1" + b"}" * 700 + b"}}"),
    ("100k-deep array", b"[" * 100_000 + b"]" * 100_000),
    ("lone surrogate", b'{"baseModel":"gemini-2.5-flash","tunedModelDisplayName":"\\ud800",'
                       b'"supervisedTuningSpec":{"trainingDatasetUri":"gs://b/t.jsonl"}}'),
]


@pytest.mark.parametrize(("what", "raw"), HOSTILE_BODIES, ids=[w for w, _ in HOSTILE_BODIES])
async def test_hostile_create_bodies_are_400_not_500(api: Factory, what: str,
                                                     raw: bytes) -> None:
    """Bodies that crashed the parser (RecursionError, int-digit limit) or were silently
    ambiguous answer 400 INVALID_ARGUMENT, submit nothing, and the API keeps serving."""
    client, engine = await api()
    resp = await client.post(BASE, data=raw, headers={"Content-Type": "application/json"})
    error = await assert_error(resp, 400, "INVALID_ARGUMENT")
    assert error["message"].startswith("Invalid JSON payload received."), what
    assert engine.submits == []
    assert (await client.get("/healthz")).status == 200


async def test_request_id_reused_with_another_body_is_409(api: Factory) -> None:
    """A requestId replayed with a different body or priority answers 409 ALREADY_EXISTS naming
    the first job, and changes nothing; the identical replay still returns that job."""
    client, engine = await api()
    params = {"requestId": "nightly-1"}
    first = await (await client.post(BASE, json=VALID_JOB, params=params)).json()
    other = {**VALID_JOB, "description": "something else"}
    error = await assert_error(await client.post(BASE, json=other, params=params), 409,
                               "ALREADY_EXISTS")
    assert first["name"] in error["message"]
    error = await assert_error(
        await client.post(BASE, json=VALID_JOB, params={**params, "priority": "5"}), 409,
        "ALREADY_EXISTS")
    again = await client.post(BASE, json=VALID_JOB, params=params)
    assert again.status == 200 and (await again.json())["name"] == first["name"]
    assert len(engine.jobs) == 1 and engine.jobs[first["name"].rsplit("/", 1)[1]].priority == 0


async def test_page_token_is_bound_to_its_parent(api: Factory) -> None:
    """A page token from one location (or project) answers 400 under another; the other API
    version of the same collection accepts it."""
    client, engine = await api()
    for _ in range(3):
        engine.add()
        engine.add(location="europe-west4")
    body = await (await client.get(BASE, params={"pageSize": "1"})).json()
    token = body["nextPageToken"]
    other_location = BASE.replace("us-central1", "europe-west4")
    await assert_error(await client.get(other_location, params={"pageToken": token}), 400,
                       "INVALID_ARGUMENT")
    other_project = BASE.replace("proj-a", "proj-b")
    await assert_error(await client.get(other_project, params={"pageToken": token}), 400,
                       "INVALID_ARGUMENT")
    beta = await client.get(BETA, params={"pageToken": token, "pageSize": "1"})
    assert beta.status == 200


async def test_every_json_answer_has_googles_content_type(api: Factory) -> None:
    """Jobs, lists, cancel, errors, probes and the OpenAPI document all answer
    `application/json; charset=UTF-8`, as Google's front ends do."""
    client, engine = await api()
    job = engine.add()
    for method, path, body in (
        ("POST", BASE, VALID_JOB), ("GET", BASE, None), ("GET", f"{BASE}/{job.id}", None),
        ("POST", f"{BASE}/{job.id}:cancel", {}), ("GET", f"{BASE}/nope", None),
        ("POST", BASE, {"bad": 1}), ("GET", "/healthz", None), ("GET", "/openapi.json", None),
        ("GET", "/no/such/path", None), ("DELETE", BASE, None),
    ):
        resp = await client.request(method, path, json=body)
        assert resp.headers["Content-Type"] == "application/json; charset=UTF-8", (method, path)


async def test_long_filter_reaches_the_handler(api: Factory) -> None:
    """A 20 000-character filter (URL well over aiohttp's default 8190-byte request line) gets
    a JSON answer, not aiohttp's plain-text 400."""
    client, engine = await api()
    engine.add()
    long_filter = " OR ".join(['labels.team="nlp"'] * 1000)[:19_990]
    long_filter = long_filter[:long_filter.rfind(" OR ")]
    resp = await client.get(BASE, params={"filter": long_filter})
    assert resp.status == 200 and len((await resp.json())["tuningJobs"]) == 1


@pytest.mark.parametrize("raw", [b"[1]", b'"x"', b'{"force": true}', b"{"], ids=str)
async def test_cancel_body_must_be_an_empty_message(api: Factory, raw: bytes) -> None:
    """CancelTuningJobRequest has no body fields: anything but nothing or {} is 400 and the job
    is not cancelled."""
    client, engine = await api()
    job = engine.add()
    resp = await client.post(f"{BASE}/{job.id}:cancel", data=raw,
                             headers={"Content-Type": "application/json"})
    await assert_error(resp, 400, "INVALID_ARGUMENT")
    assert engine.jobs[job.id].state is LocalState.QUEUED


async def test_unknown_job_404_uses_the_emulators_wording(api: Factory) -> None:
    """An unknown id answers 404 'The TuningJob does not exist: <name>.' like the emulator."""
    client, _ = await api()
    error = await assert_error(await client.get(f"{BASE}/nope"), 404, "NOT_FOUND")
    assert error["message"] == ("The TuningJob does not exist: "
                                "projects/proj-a/locations/us-central1/tuningJobs/nope.")
