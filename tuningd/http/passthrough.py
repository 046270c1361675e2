"""Pass-through: the calls official SDKs make beside tuningJobs CRUD, forwarded to Vertex.

Only the path shapes in SHAPES are served (anything else under a version prefix answers 404
"Method not found.", as Google's front end does). Each forwarded call is made with the daemon's
own credentials, costs one request token of the location's budget, and is bounded by the API's
request size limit. A tuningd job id in a path, or in rebaseTunedModel's
`tunedModelRef.tuningJob`, is replaced by the job's Vertex name; the answer names the tuningd job
again wherever it named that Vertex job. Otherwise status and body pass through unchanged.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web

from tuningd.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from tuningd.core.model import Job
from tuningd.http.envelope import JSON_CONTENT_TYPE
from tuningd.ports import VertexApi, split_job_name
from tuningd.vertex import wire

log = structlog.get_logger("tuningd.http.passthrough")

# One path segment of a resource id (model `123@1`, context `tuning-experiment-2025...`,
# operation `456`): no "/", no ":" (verbs follow it), never "." or ".." (it starts alnum).
_SEGMENT = "[A-Za-z0-9][A-Za-z0-9_.~@-]*"
# Empty segments match too, so that wire.check_parent (400), not the router, answers them.
_PARENT = "/projects/{project:[^/]*}/locations/{location:[^/]*}"
_VERSIONS = ("v1", "v1beta1")
# The v1beta1 GAPIC REST clients poll long-running operations under /ui/ (observed with
# google-cloud-aiplatform 2.7's rebase_tuned_model), so operation shapes are served there too.
_WITH_UI = ("v1", "v1beta1", "ui")
# Every path prefix the pass-through serves: under these, an unknown path is an unknown method.
PREFIXES = _WITH_UI
_ID_CHARS = "A-Za-z0-9_-"


@dataclass(frozen=True)
class Shape:
    """One allowed path shape: its HTTP method, prefixes, route template and meaning."""

    name: str  # a stable name for logs and the OpenAPI operationId
    method: str
    prefixes: tuple[str, ...]
    route: str  # after the prefix; aiohttp placeholders
    summary: str
    names_job: bool = False  # the {id} placeholder is a tuning job id (mapped)

    def path(self, prefix: str) -> str:
        return f"/{prefix}{self.route}"


_OPS = f"{_PARENT}/tuningJobs/{{id:[^/:]+}}/operations"
_OP = f"{_OPS}/{{operation:{_SEGMENT}}}"
_LOCATION_OP = f"{_PARENT}/operations/{{operation:{_SEGMENT}}}"

SHAPES: tuple[Shape, ...] = (
    Shape("metadataStores.contexts.get", "GET", _VERSIONS,
          f"{_PARENT}/metadataStores/{{store:{_SEGMENT}}}/contexts/{{context:{_SEGMENT}}}",
          "A metadata context: the job's `experiment` (what TuningJob.refresh() reads)."),
    Shape("models.get", "GET", _VERSIONS, f"{_PARENT}/models/{{model:{_SEGMENT}}}",
          "A model, e.g. the job's `tunedModel.model` (`{id}@{version}` accepted)."),
    Shape("endpoints.get", "GET", _VERSIONS, f"{_PARENT}/endpoints/{{endpoint:{_SEGMENT}}}",
          "An endpoint, e.g. the job's `tunedModel.endpoint`."),
    Shape("tuningJobs.rebaseTunedModel", "POST", _VERSIONS,
          f"{_PARENT}/tuningJobs:rebaseTunedModel",
          "Rebase a tuned model (a long-running operation whose response is the new TuningJob; "
          "Vertex creates that job itself, outside tuningd's queue). "
          "`tunedModelRef.tuningJob` may name a tuningd job."),
    Shape("tuningJobs.optimizePrompt", "POST", ("v1beta1",),
          f"{_PARENT}/tuningJobs:optimizePrompt",
          "Prompt optimizer (answers a JSON array of content chunks)."),
    Shape("tuningJobs.validateReinforcementTuningReward", "POST", ("v1beta1",),
          f"{_PARENT}/tuningJobs:validateReinforcementTuningReward",
          "Compute a reinforcement-tuning reward for one sample response."),
    Shape("tuningJobs.operations.list", "GET", _WITH_UI, _OPS,
          "The operations of a tuning job.", names_job=True),
    Shape("tuningJobs.operations.get", "GET", _WITH_UI, _OP,
          "One operation of a tuning job.", names_job=True),
    Shape("tuningJobs.operations.delete", "DELETE", _WITH_UI, _OP,
          "Delete an operation of a tuning job.", names_job=True),
    Shape("tuningJobs.operations.cancel", "POST", _WITH_UI, _OP + ":cancel",
          "Cancel an operation of a tuning job.", names_job=True),
    Shape("tuningJobs.operations.wait", "POST", _WITH_UI, _OP + ":wait",
          "Wait for an operation of a tuning job.", names_job=True),
    Shape("operations.get", "GET", _WITH_UI, _LOCATION_OP,
          "A location-level operation (as a rebase LRO may be named)."),
    Shape("operations.wait", "POST", _WITH_UI, _LOCATION_OP + ":wait",
          "Wait for a location-level operation."),
)


class JobPage(Protocol):
    """What a listing of jobs gives back (engine.Page)."""

    @property
    def jobs(self) -> Sequence[Job]: ...


class JobsFacade(Protocol):
    """The part of the engine facade the pass-through uses (service.engine.Engine has it)."""

    async def get(self, job_id: str) -> Job | None: ...

    async def list_jobs(self, project: str, location: str, *,
                        predicate: Callable[[Job], bool] | None, page_size: int,
                        after_key: str | None) -> JobPage: ...

    def spend_request(self, location: str) -> float: ...


@dataclass(frozen=True)
class _Mapping:
    """A tuningd job and its Vertex job, for rewriting the answer."""

    local_name: str
    remote_name: str


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Passthrough:
    """Serves SHAPES by forwarding to Vertex through the VertexApi port (see the module doc)."""

    def __init__(self, vertex: VertexApi, jobs: JobsFacade) -> None:
        self._vertex = vertex
        self._jobs = jobs
        self._projects: frozenset[str] = frozenset()
        self._locations: frozenset[str] = frozenset()
        # Project numbers seen in the Vertex names of jobs of an allowed project.
        self._numbers: set[str] = set()

    def add_routes(self, router: web.UrlDispatcher, *, allowed_projects: frozenset[str],
                   allowed_locations: frozenset[str]) -> None:
        """Register every shape (each prefix) on the API's router, with the API's scope."""
        self._projects, self._locations = allowed_projects, allowed_locations
        for shape in SHAPES:
            for prefix in shape.prefixes:
                router.add_route(shape.method, shape.path(prefix), self._handler(shape))

    def _handler(self, shape: Shape) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._forward(request, shape)
        return handle

    async def _forward(self, request: web.Request, shape: Shape) -> web.Response:
        prefix = request.path.split("/", 2)[1]
        project, location = request.match_info["project"], request.match_info["location"]
        wire.check_parent(project, location, field="name" if shape.method == "GET" else "parent")
        await self._check_scope(project, location)
        # Read before anything else: a body over server.max_body_bytes answers 413 here.
        body = await request.read()
        path = request.path[len(prefix) + 1:]
        mapping: _Mapping | None = None
        if shape.names_job:
            found = await self._job_in_path(request, project, location)
            if found is not None:
                job, mapping = found
                if mapping is None:
                    return _not_created_yet(shape, job, request)
                path = path.replace(f"/{_local_name(job)}/", f"/{mapping.remote_name}/", 1)
        elif shape.name == "tuningJobs.rebaseTunedModel":
            body, mapping = await self._map_rebase_body(body)
        wait_s = self._jobs.spend_request(location)
        if wait_s > 0:
            raise ResourceExhausted(
                f"tuningd's request budget for location {location} is spent "
                f"(limits.requests_per_minute); retry in {wait_s:.1f} s.",
                details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                          "retryDelay": f"{wait_s:.3f}s"}])
        started_s = time.monotonic()
        answer = await self._vertex.forward(
            shape.method, path, location=location, api_version=prefix,
            query=list(request.query.items()), body=body or None)
        raw = answer.body if mapping is None else _map_back(answer.body, mapping)
        log.info("passthrough.forwarded", shape=shape.name, prefix=prefix, location=location,
                 status=answer.status, mapped=mapping is not None,
                 duration_ms=round((time.monotonic() - started_s) * 1000, 2))
        return web.Response(body=raw, status=answer.status, headers={
            "Content-Type": answer.headers.get("Content-Type", JSON_CONTENT_TYPE)})

    async def _check_scope(self, project: str, location: str) -> None:
        if self._locations and location not in self._locations:
            raise PermissionDenied(
                f"Permission denied on resource location projects/{project}/locations/{location}."
            )
        if not self._projects or project in self._projects or project in self._numbers:
            return
        # Vertex names experiments, models and endpoints by project NUMBER: a number is in scope
        # when a job of an allowed project was created on Vertex under it.
        if project.isdigit():
            prefix = f"projects/{project}/"
            for allowed in sorted(self._projects):
                page = await self._jobs.list_jobs(
                    allowed, location, page_size=1, after_key=None,
                    predicate=lambda job: (job.remote_name or "").startswith(prefix))
                if page.jobs:
                    self._numbers.add(project)
                    return
        raise PermissionDenied(f"Permission denied on resource project {project}.")

    async def _job_in_path(self, request: web.Request, project: str,
                           location: str) -> tuple[Job, _Mapping | None] | None:
        """The tuningd job the path names (with its mapping, None when it has no Vertex job
        yet); None when the id is not tuningd's, e.g. a job rebaseTunedModel made on Vertex,
        whose id goes to Vertex as it is."""
        job = await self._jobs.get(request.match_info["id"])
        if job is None or job.project != project or job.location != location:
            return None
        if not job.remote_name:
            return job, None
        return job, _Mapping(_local_name(job), job.remote_name)

    async def _map_rebase_body(self, raw: bytes) -> tuple[bytes, _Mapping | None]:
        """rebaseTunedModel's `tunedModelRef.tuningJob`, when it names a tuningd job, names its
        Vertex job instead; anything else is sent as it came."""
        doc = wire.parse_json_body(raw)
        if not isinstance(doc, dict):
            return raw, None
        ref_key = "tunedModelRef" if "tunedModelRef" in doc else "tuned_model_ref"
        ref = doc.get(ref_key)
        if not isinstance(ref, dict):
            return raw, None
        job_key = "tuningJob" if "tuningJob" in ref else "tuning_job"
        name = ref.get(job_key)
        if not isinstance(name, str):
            return raw, None
        try:
            project, location, job_id = split_job_name(name)
        except InvalidArgument:
            return raw, None
        job = await self._jobs.get(job_id)
        if job is None or job.project != project or job.location != location:
            return raw, None
        await self._check_scope(project, location)
        if not job.remote_name:
            raise FailedPrecondition(
                f"The tuning job {name} has no tuned model to rebase: it has not been created "
                f"on Vertex (tuningd state {job.state.value}).")
        doc[ref_key] = {**ref, job_key: job.remote_name}
        mapped = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        return mapped, _Mapping(name, job.remote_name)


def _local_name(job: Job) -> str:
    return f"projects/{job.project}/locations/{job.location}/tuningJobs/{job.id}"


def _not_created_yet(shape: Shape, job: Job, request: web.Request) -> web.Response:
    """What Vertex answers about the operations of a job that has none: an empty list, or
    NOT_FOUND for one operation."""
    if shape.name == "tuningJobs.operations.list":
        return web.Response(body=b"{}", headers={"Content-Type": JSON_CONTENT_TYPE})
    operation = request.match_info["operation"]
    raise NotFound(
        f"Operation {_local_name(job)}/operations/{operation} does not exist: the tuning job "
        f"has not been created on Vertex yet (tuningd state {job.state.value}).")


def _map_back(raw: bytes, mapping: _Mapping) -> bytes:
    """The answer with the Vertex job's name replaced by the tuningd job's wherever it is a whole
    name (followed by "/", ":", a quote or the end); anything else stays byte for byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    pattern = re.escape(mapping.remote_name) + f"(?![{_ID_CHARS}])"
    mapped = re.sub(pattern, lambda _: mapping.local_name, text)
    return raw if mapped == text else mapped.encode("utf-8")


# --------------------------------------------------------------------------------------------
# OpenAPI


def openapi_paths(parent_params: Sequence[Mapping[str, Any]],
                  error_codes: Sequence[int]) -> dict[str, Any]:
    """OpenAPI path items of every shape at every prefix (parent_params describe project and
    location; error_codes are the statuses tuningd itself may answer)."""
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    paths: dict[str, Any] = {}
    for shape in SHAPES:
        for prefix in shape.prefixes:
            template = re.sub(r"\{([a-z]+):[^}]*\}", r"{\1}", shape.path(prefix))
            names = re.findall(r"\{([a-z]+)\}", template)
            params = [dict(p) for p in parent_params]
            params += [{"name": n, "in": "path", "required": True,
                        "description": _PARAM_TEXT[n], "schema": {"type": "string"}}
                       for n in names if n not in ("project", "location")]
            responses: dict[str, Any] = {
                "200": {"description": "Vertex's answer as it came (the tuningd job named "
                                       "where it named its Vertex job)",
                        "content": {"application/json": {"schema": {}}}}}
            for code in (*error_codes, 429):
                responses[str(code)] = {
                    "description": _ERROR_TEXT.get(code, "an error (Google's envelope)"),
                    "content": {"application/json": {"schema": envelope}}}
            operation: dict[str, Any] = {
                "summary": f"Pass-through to Vertex: {shape.summary}",
                "operationId": f"{prefix}.passthrough.{shape.name}",
                "parameters": params,
                "responses": responses,
            }
            if shape.method == "POST":
                operation["requestBody"] = {"required": False, "content": {
                    "application/json": {"schema": {"type": "object"}}}}
            paths.setdefault(template, {})[shape.method.lower()] = operation
    return paths


_PARAM_TEXT = {
    "store": "metadata store id (`default`)",
    "context": "context id, e.g. tuning-experiment-20250602101503418225",
    "model": "model id, optionally `@version`",
    "endpoint": "endpoint id",
    "id": "tuningd job id (sent to Vertex as its Vertex job), or a Vertex job id",
    "operation": "operation id",
}
_ERROR_TEXT = {
    413: "request body over server.max_body_bytes (status INVALID_ARGUMENT)",
    429: "RESOURCE_EXHAUSTED: the location's request budget is spent (RetryInfo says when to "
         "retry), or Vertex's own quota answer",
    503: "UNAVAILABLE: Vertex could not be reached",
    504: "DEADLINE_EXCEEDED: Vertex did not answer in vertex.request_timeout_s",
}
