"""Control API: Vertex-compatible tuningJobs routes over the engine, plus probes and OpenAPI."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web

from tuningd.adapters.pushdown import filter_pushdown
from tuningd.core.errors import (
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tuningd.core.model import (
    LABEL_JOB_ID,
    RESERVED_LABEL_PREFIX,
    Job,
    JobEvent,
    LocalState,
)
from tuningd.http.answers import (
    ReadinessCheck,
    RequestObserver,
    auth_middleware,
    error_middleware,
)
from tuningd.http.envelope import HANDLER_ARGS, Handler, json_response
from tuningd.http.jobview import job_name, job_view, render_queued, render_view
from tuningd.http.openapi import openapi_document
from tuningd.http.passthrough import Passthrough
from tuningd.http.statuspage import add_status_routes
from tuningd.http.tuningd_jobs import resolve_job, serve_list
from tuningd.service.facade import JobService
from tuningd.vertex import models, wire

log = structlog.get_logger("tuningd.http.api")

# Label keys tuningd sets itself for crash reconciliation (design §3) all start with this; a
# client-chosen value would make reconciliation adopt the wrong remote job, so it is refused on
# create. Every other key (`managed-by` included) is the client's.
RESERVED_LABEL_PREFIXES: tuple[str, ...] = (RESERVED_LABEL_PREFIX,)

# The base-model catalog of a daemon by default: the shipped list, unknown models forwarded.
DEFAULT_DAEMON_CATALOG = models.ModelCatalog(models.DEFAULT_CATALOG.models,
                                             unknown=models.UnknownModels.FORWARD)

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INT = re.compile(r"[+-]?[0-9]{1,12}")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# --------------------------------------------------------------------------------------------
# Request validation helpers


def parse_priority(value: str | None) -> int:
    """The `priority` query parameter: an int32, 0 when absent."""
    if value is None:
        return 0
    # int() alone would also take " 5" and "1_000", which Google's query parser refuses.
    if not _INT.fullmatch(value) or not _INT32_MIN <= int(value) <= _INT32_MAX:
        raise InvalidArgument(f"Invalid value at 'priority' (TYPE_INT32), \"{value}\"")
    return int(value)


def parse_request_id(value: str | None) -> str | None:
    """The `requestId` query parameter: 1-64 characters of [A-Za-z0-9_-] (a UUID fits)."""
    if value is None:
        return None
    if not _REQUEST_ID.fullmatch(value):
        raise InvalidArgument(
            "Invalid value at 'request_id': must be 1 to 64 characters of letters, digits, "
            "'_' and '-' (a UUID is recommended)."
        )
    return value


def check_reserved_labels(spec: Mapping[str, Any]) -> None:
    """Refuse client labels that would collide with tuningd's reconciliation labels."""
    for key in spec.get("labels") or {}:
        if any(str(key).startswith(prefix) for prefix in RESERVED_LABEL_PREFIXES):
            raise InvalidArgument(
                f"Label key \"{key}\" is reserved: keys starting with "
                f"\"{RESERVED_LABEL_PREFIX}\" (such as \"{LABEL_JOB_ID}\") are set by tuningd "
                "itself to reconcile jobs with Vertex."
            )


def _query(request: web.Request, camel: str, snake: str) -> str | None:
    # Google front ends accept both the JSON name and the proto name of a query parameter.
    value = request.query.get(camel)
    return value if value is not None else request.query.get(snake)


# --------------------------------------------------------------------------------------------
# The application


def make_api_app(
    engine: JobService,
    *,
    token: str | None = None,
    allowed_projects: Sequence[str] = (),
    allowed_locations: Sequence[str] = (),
    max_body_bytes: int = 1_048_576,
    metrics_handler: Handler | None = None,
    readiness: ReadinessCheck | None = None,
    observe_request: RequestObserver | None = None,
    passthrough: Passthrough | None = None,
    catalog: Callable[[], models.ModelCatalog] = lambda: DEFAULT_DAEMON_CATALOG,
    instance: Callable[[], Mapping[str, Any]] | None = None,
) -> web.Application:
    """Build the control API application.

    - engine: the job facade every job route calls (the Engine, or on a shared store the
      leadership's switch between the engine and the standby facade).
    - token: when set, `Authorization: Bearer <token>` is required on every route except
      /healthz, /readyz, /metrics and the status page's shell at / (401 UNAUTHENTICATED
      otherwise).
    - allowed_projects / allowed_locations: when non-empty, other projects or locations in a path
      (or of a job looked up by id) answer 403 PERMISSION_DENIED.
    - max_body_bytes: request bodies above it answer 413 (status INVALID_ARGUMENT).
    - metrics_handler: served at GET /metrics when given (the route is absent otherwise).
    - readiness: extra /readyz checks (store writable, credentials usable...): a mapping of check
      name to True, or to False / a reason string when failing.
    - observe_request: called with (method, route template, status) after each request.
    - passthrough: when given, its allowed path shapes (the SDKs' reads and verbs beside
      tuningJobs CRUD) are served by forwarding them to Vertex.
    - catalog: the base models checked at create ([models] in the configuration, read per
      request so that a reload applies); what it answers for a model it does not list decides
      between a 400 now and Vertex's answer.
    - instance: this instance's role among several on one store (role, instance_id, epoch,
      leader), shown in the /readyz answer when given.
    """
    if token is not None and not token:
        # An empty token would make "Authorization: Bearer " a valid credential.
        raise ConfigError("The API token must not be empty; leave it unset to disable auth.")
    api = _Api(
        engine,
        allowed_projects=frozenset(allowed_projects),
        allowed_locations=frozenset(allowed_locations),
        readiness=readiness,
        catalog=catalog,
        instance=instance,
    )
    app = web.Application(
        client_max_size=max_body_bytes,
        handler_args=dict(HANDLER_ARGS),
        middlewares=[
            error_middleware(max_body_bytes, observe_request),
            auth_middleware(token),
        ],
    )
    router = app.router
    router.add_get("/healthz", api.healthz, allow_head=False)
    router.add_get("/readyz", api.readyz, allow_head=False)
    if metrics_handler is not None:
        router.add_get("/metrics", metrics_handler, allow_head=False)
    openapi = openapi_document(with_metrics=metrics_handler is not None,
                               with_token=token is not None,
                               with_passthrough=passthrough is not None)

    async def openapi_json(request: web.Request) -> web.Response:
        return json_response(openapi)

    router.add_get("/openapi.json", openapi_json, allow_head=False)
    for version in wire.API_VERSIONS:
        # Empty segments match too, so that wire.check_parent answers them (400), not the router.
        base = f"/{version}/projects/{{project:[^/]*}}/locations/{{location:[^/]*}}/tuningJobs"
        router.add_post(base, api.create)
        router.add_get(base, api.list, allow_head=False)
        router.add_get(base + "/{id:[^/:]+}", api.get, allow_head=False)
        router.add_post(base + "/{id:[^/:]+}:cancel", api.cancel)
    router.add_get("/v1/tuningd/jobs", api.list_everywhere, allow_head=False)
    router.add_get("/v1/tuningd/jobs/{id:[^/:]+}", api.lookup, allow_head=False)
    add_status_routes(router, engine)
    if passthrough is not None:
        passthrough.add_routes(router, allowed_projects=frozenset(allowed_projects),
                               allowed_locations=frozenset(allowed_locations))
    return app


class _Api:
    """The route handlers: parse, call the engine, render. No business rules here."""

    def __init__(self, engine: JobService, *, allowed_projects: frozenset[str],
                 allowed_locations: frozenset[str], readiness: ReadinessCheck | None,
                 catalog: Callable[[], models.ModelCatalog],
                 instance: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self._engine = engine
        self._instance = instance
        self._catalog = catalog
        self._projects = allowed_projects
        self._locations = allowed_locations
        self._readiness = readiness

    def _check_scope(self, project: str, location: str) -> None:
        if self._projects and project not in self._projects:
            raise PermissionDenied(f"Permission denied on resource project {project}.")
        if self._locations and location not in self._locations:
            raise PermissionDenied(
                f"Permission denied on resource location projects/{project}/locations/{location}."
            )

    def _scope(self, request: web.Request, *, field: str = "parent") -> tuple[str, str]:
        project, location = request.match_info["project"], request.match_info["location"]
        # A parent Vertex would refuse must never be stored: the job could never be submitted.
        wire.check_parent(project, location, field=field)
        self._check_scope(project, location)
        return project, location

    async def _job_in_scope(self, request: web.Request) -> Job:
        project, location = self._scope(request, field="name")
        job_id = request.match_info["id"]
        job = await self._engine.get(job_id)
        # A job of another project/location does not exist under this path, as on Vertex.
        if job is None or job.project != project or job.location != location:
            raise NotFound(
                f"The TuningJob does not exist: projects/{project}/locations/{location}/"
                f"tuningJobs/{job_id}."
            )
        return job

    def _respond(self, request: web.Request, job: Job,
                 history: Sequence[JobEvent] | None, api_version: str) -> web.Response:
        view = job_view(job, queue_position=self._engine.queue_position(job), history=history,
                        pause=self._engine.pause_for(job))
        body = render_view(view, enum_as_int=wire.wants_int_enums(request.query),
                           api_version=api_version)
        return json_response(body)

    async def create(self, request: web.Request) -> web.Response:
        """POST .../tuningJobs[?requestId=&priority=]: queue a job; 200 with its TuningJob."""
        project, location = self._scope(request)
        if self._engine.draining:
            raise Unavailable("tuningd is shutting down and accepts no new tuning jobs.")
        priority = parse_priority(request.query.get("priority"))
        request_id = parse_request_id(_query(request, "requestId", "request_id"))
        version = _version(request)
        body = wire.parse_json_body(await request.read())
        # Clients often re-POST a job they fetched; Vertex ignores output-only fields on create.
        spec = wire.strip_output_only(wire.parse_tuning_job(body, api_version=version))
        check_reserved_labels(spec)
        wire.validate_create(spec, self._catalog(), api_version=version)
        # The job is forwarded at the version its client speaks, so that every field that
        # version knows reaches Vertex and everything Vertex shows at it comes back.
        job, created = await self._engine.submit(
            project, location, spec, priority=priority, request_id=request_id,
            api_version=version,
        )
        if not created and (job.spec != spec or job.priority != priority
                            or job.api_version not in (None, version)):
            # A retry must repeat its request; silently answering the first job for a different
            # body would hide a client bug (two jobs meant, one queued). Nothing is changed.
            raise AlreadyExists(
                f"requestId {request_id} was already used for a different request (tuning job "
                f"{job_name(job)}). Repeat the same body, priority and API version to get that "
                "job, or use a new requestId."
            )
        if not created or job.state is not LocalState.QUEUED or job.remote_json is not None:
            # A replay answers the job as it is now (it may have moved on since its create).
            return self._respond(request, job, None, version)
        # The job just made is only queued: its answer is the spec parsed above under tuningd's
        # name, state, times and object, the same as the general path would render from the
        # stored text (test_create_reply_is_the_get_view), without reading that text back.
        return json_response(render_queued(
            job, spec, queue_position=self._engine.queue_position(job),
            pause=self._engine.pause_for(job),
            enum_as_int=wire.wants_int_enums(request.query), api_version=version))

    async def get(self, request: web.Request) -> web.Response:
        """GET .../tuningJobs/{id}: the job with its history."""
        job = await self._job_in_scope(request)
        history = await self._engine.history(job.id)
        return self._respond(request, job, history, _version(request))

    def _in_scope(self, job: Job) -> bool:
        return ((not self._projects or job.project in self._projects)
                and (not self._locations or job.location in self._locations))

    async def lookup(self, request: web.Request) -> web.Response:
        """GET /v1/tuningd/jobs/{id}: a job by local id (or a unique prefix of one) alone,
        whatever its project/location."""
        job = await resolve_job(self._engine, request.match_info["id"], self._in_scope)
        self._check_scope(job.project, job.location)
        history = await self._engine.history(job.id)
        return self._respond(request, job, history, "v1")

    async def list_everywhere(self, request: web.Request) -> web.Response:
        """GET /v1/tuningd/jobs: every project's and location's jobs in scope, newest first."""
        return await serve_list(request, self._engine, self._in_scope)

    async def list(self, request: web.Request) -> web.Response:
        """GET .../tuningJobs?filter=&pageSize=&pageToken=: newest first, AIP-160 filter."""
        project, location = self._scope(request)
        filter_text = request.query.get("filter", "")
        # Parsed once: the predicate and the index-answerable part come from the same parse.
        list_filter = wire.parse_list_filter(filter_text)
        matches = list_filter.matches
        page_size = wire.parse_page_size(_query(request, "pageSize", "page_size"))
        token = _query(request, "pageToken", "page_token")
        # A token resumes only the list it came from (same parent and filter; either version).
        scope = f"projects/{project}/locations/{location}"
        after_key = wire.decode_page_token(token, filter_text, scope) if token else None

        def predicate(job: Job) -> bool:
            return matches(_without_extension(job_view(job)))

        # Index-answerable necessary conditions (top-level `state =` / `labels.k =`) go to the
        # store; `predicate` still checks every job, so the result is the same, only cheaper.
        pushdown = filter_pushdown(list_filter)
        page = await self._engine.list_jobs(project, location, predicate=predicate,
                                            page_size=page_size, after_key=after_key,
                                            states=pushdown.states, labels=pushdown.labels)
        enum_as_int = wire.wants_int_enums(request.query)
        version = _version(request)
        body: dict[str, Any] = {}
        if page.jobs:
            body["tuningJobs"] = [
                render_view(job_view(job, queue_position=self._engine.queue_position(job),
                                     pause=self._engine.pause_for(job)),
                            enum_as_int=enum_as_int, api_version=version)
                for job in page.jobs
            ]
        if page.next_key is not None:
            body["nextPageToken"] = wire.encode_page_token(page.next_key, filter_text, scope)
        return json_response(body)

    async def cancel(self, request: web.Request) -> web.Response:
        """POST .../tuningJobs/{id}:cancel: best-effort cancel; 200 {}."""
        job = await self._job_in_scope(request)
        # CancelTuningJobRequest has no body fields: an empty body or {} (anything else is
        # refused like Google does, before anything changes).
        wire.parse_empty_request(wire.parse_json_body(await request.read()))
        await self._engine.cancel(job.id)
        return json_response({})

    async def healthz(self, request: web.Request) -> web.Response:
        """GET /healthz: the event loop answers."""
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """GET /readyz: 200 when the engine is ready and every readiness check passes, else 503."""
        failures: dict[str, str] = {}
        checks: dict[str, str] = {}
        if self._engine.draining:
            failures["engine"] = "draining"
        elif not self._engine.ready():
            failures["engine"] = "starting"
        else:
            checks["engine"] = "ok"
        if self._readiness is not None:
            try:
                results = await self._readiness()
            except Exception as exc:  # a broken check means "not ready", never a 500
                log.warning("readiness.failed", error=type(exc).__name__)
                results = {"readiness": f"check failed: {type(exc).__name__}"}
            for name, result in results.items():
                if result is True:
                    checks[name] = "ok"
                else:
                    failures[name] = "failed" if result is False else str(result)
        body: dict[str, Any] = {"status": "ready", "checks": checks}
        if failures:
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
            error = Unavailable(
                f"tuningd is not ready: {reasons}",
                details=[{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "NOT_READY",
                    "domain": "tuningd",
                    "metadata": failures,
                }],
            )
            # Google's envelope for clients of errors, and beside it the readiness answer's
            # own shape with every reason, for people and probes reading the body.
            body = {**wire.error_envelope(error), "status": "not_ready",
                    "reasons": [{"check": name, "reason": why}
                                for name, why in sorted(failures.items())],
                    "checks": {**checks, **failures}}
        if self._instance is not None:
            body["instance"] = dict(self._instance())
        return json_response(body, status=503 if failures else 200)


def _without_extension(view: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "tuningd"}


def _version(request: web.Request) -> str:
    return request.path.split("/", 2)[1]


# --------------------------------------------------------------------------------------------
