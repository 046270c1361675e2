"""aiohttp front end of the emulator: Vertex routes, token/admin endpoints, faults, auth, logs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from tuningd.core.errors import (
    InvalidArgument,
    NotFound,
    TuningdError,
    Unavailable,
    Unimplemented,
)
from tuningd.emulator import sdk_routes
from tuningd.emulator.auth import OAuthError
from tuningd.emulator.config import Clock, EmulatorConfig, ManualClock, SystemClock
from tuningd.emulator.faults import FaultAction, Faults, LostReplyMode, injected_error
from tuningd.emulator.persist import PersistentState
from tuningd.emulator.replies import (
    drop,
    garbled,
    log_fault,
    rule_hit,
)
from tuningd.emulator.state import EmulatorState
from tuningd.http import envelope as http_envelope
from tuningd.http.envelope import (
    HANDLER_ARGS,
    METHOD_NOT_FOUND_MESSAGE,
    answer_in_envelope,
    json_response,
    plain_http_error,
)
from tuningd.vertex import wire

log = structlog.get_logger("tuningd.emulator")

STATE_KEY = web.AppKey("emulator_state", EmulatorState)
# Empty segments match too, so that wire.check_parent (400), not the router, refuses them.
_JOBS_PREFIX = "/{version}/projects/{project:[^/]*}/locations/{location:[^/]*}"


class _Dropped(Exception):
    """Internal signal: the connection was closed on purpose and nothing must be written."""


class _LateCreate(Exception):
    """Internal signal from the create handler: this valid create lands late."""

    def __init__(self, spec: dict[str, Any], body: Any, where: dict[str, str]) -> None:
        super().__init__("late_create")
        self.spec = spec
        self.body = body
        self.where = where


@dataclass
class _Call:
    """One Vertex call in flight."""

    received_s: float  # clock seconds when it arrived
    outcome: str | None = None  # replaces the HTTP status in the request counts


def make_app(state_or_config: EmulatorState | EmulatorConfig | None = None) -> web.Application:
    """The emulator's aiohttp application around a new or an existing state."""
    if isinstance(state_or_config, EmulatorState):
        state = state_or_config
    else:
        state = EmulatorState(state_or_config)
    app = web.Application(middlewares=[_error_middleware], handler_args=dict(HANDLER_ARGS))
    app[STATE_KEY] = state
    router = app.router
    router.add_post("/token", _token)
    router.add_get("/emulator/state", _admin_state)
    router.add_get("/emulator/faults", _admin_get_faults)
    router.add_post("/emulator/faults", _admin_set_faults)
    router.add_post("/emulator/reset", _admin_reset)
    router.add_post("/emulator/advance", _admin_advance)
    sdk_routes.add_routes(app, _api_call, seed=state.config.seed)
    router.add_route("*", _JOBS_PREFIX + "/tuningJobs/{job}", _job_resource)
    router.add_route("*", _JOBS_PREFIX + "/metadataStores/{store}/contexts/{context}",
                     _experiment_context)
    router.add_route("*", _JOBS_PREFIX + "/{collection}", _collection)
    router.add_route("*", "/{tail:.*}", _unknown_route)
    return app


# --------------------------------------------------------------------------- middleware


@web.middleware
async def _error_middleware(request: web.Request,
                            handler: http_envelope.Handler) -> web.StreamResponse:
    """Every error leaves in Google's JSON envelope, including aiohttp's own 404/405/413."""
    return await answer_in_envelope(request, handler, http_error=plain_http_error, logger=log)


# --------------------------------------------------------------------------- Vertex API


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


async def _collection(request: web.Request) -> web.StreamResponse:
    collection = request.match_info["collection"]
    if collection == "tuningJobs":
        if request.method == "POST":
            return await _api_call(request, "create", _create)
        if request.method == "GET":
            return await _api_call(request, "list", _list)
    if (collection.startswith("tuningJobs:") and request.method == "POST"
            and request.match_info["version"] in wire.API_VERSIONS):
        # rebaseTunedModel / optimizePrompt / ... exist in Vertex but are not emulated.
        return await _api_call(request, "other", _unimplemented)
    return await _api_call(request, "other", _method_not_found)


async def _job_resource(request: web.Request) -> web.StreamResponse:
    _, _, verb = request.match_info["job"].partition(":")
    if not verb and request.method == "GET":
        return await _api_call(request, "get", _get)
    if verb == "cancel" and request.method == "POST":
        return await _api_call(request, "cancel", _cancel)
    # Vertex has no delete or update for tuning jobs.
    return await _api_call(request, "other", _method_not_found)


async def _experiment_context(request: web.Request) -> web.StreamResponse:
    # The Vertex SDK's TuningJob.refresh() reads the job's experiment context; serve just that.
    if request.method == "GET":
        return await _api_call(request, "experiment", _get_experiment)
    return await _api_call(request, "other", _method_not_found)


async def _unknown_route(request: web.Request) -> web.StreamResponse:
    return await _api_call(request, "other", _method_not_found)


Handler = Callable[[web.Request, EmulatorState], Awaitable[dict[str, Any]]]


async def _api_call(request: web.Request, method: str, handler: Handler) -> web.StreamResponse:
    """Runs one Vertex call through auth, rate limits and faults; counts and logs it."""
    state = _state(request)
    started = time.monotonic()
    call = _Call(received_s=state.now())
    outcome = "500"
    try:
        response = await _guarded(request, state, method, handler, call)
        outcome = call.outcome or str(response.status)
        return response
    except _Dropped as dropped:
        outcome = str(dropped) or "dropped"
        return web.Response(status=204)  # never written: the transport is already closed
    except TuningdError as err:
        outcome = str(err.http_status)
        raise
    except asyncio.CancelledError:
        # The server stopped (or the client left) while the call was held.
        outcome = call.outcome or "cancelled"
        raise
    finally:
        state.record_request(method, outcome)
        log.debug("request.answered", http_method=request.method, path=request.path,
                  api_method=method, outcome=outcome,
                  duration_ms=round((time.monotonic() - started) * 1000, 2))


async def _guarded(request: web.Request, state: EmulatorState, method: str,
                   handler: Handler, call: _Call) -> web.StreamResponse:
    """Order (the seeded dice roll only for enabled faults, in this order): version, auth,
    rate limits, latency, drop, error, error rules; get/list/cancel: garbled reply (decided
    before the call, so it changes nothing); create: validation, late create, commit, lost
    reply, garbled reply."""
    faults: Faults = state.faults
    if method != "other":
        if request.match_info.get("version") not in wire.API_VERSIONS:
            raise NotFound(METHOD_NOT_FOUND_MESSAGE)
        if state.config.strict_auth:
            state.tokens.check(request.headers.get("Authorization"), state.now())
        # Vertex refuses a malformed parent before any quota or work (authenticated first).
        info = request.match_info
        wire.check_parent(info["project"], info["location"],
                          field="parent" if method in ("create", "list") else "name")
        state.check_rate(method)
        delay_s = state.dice.latency_s(faults)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        action = state.dice.decide(faults, method)
        if action == FaultAction.DROP:
            drop(request)
            raise _Dropped("dropped")
        if action == FaultAction.ERROR:
            raise injected_error(faults.error_status(method), state.config.project_number)
        rule_err = rule_hit(request, state, faults, method)
        if rule_err is not None:
            raise rule_err
    reply = FaultAction.NONE
    if method in ("get", "list", "cancel"):
        # Decided before the call runs: a garbled answer to these changes nothing.
        reply = state.dice.reply_fault(faults, method)
        if reply != FaultAction.NONE and method == "cancel":
            handler = _cancel_check
    try:
        body = await handler(request, state)
    except _LateCreate as late:
        # The landing time is fixed on receipt, before the hold: the job lands even if this
        # handler is cancelled while it holds the request.
        hold_s = faults.late_create_hold_s
        state.schedule_create(late.spec, late.body, received_s=call.received_s,
                              land_s=call.received_s + hold_s + faults.late_create_delay_s,
                              **late.where)
        call.outcome = "late_create"
        log_fault(request, method, "late_create", hold_s=hold_s)
        if hold_s > 0:
            await asyncio.sleep(hold_s)
        drop(request)
        raise _Dropped("late_create") from None
    if method == "create":
        if state.dice.roll(state.faults.lost_reply_rate):
            # The job really exists now; only the reply is lost (tests label reconciliation).
            if state.faults.lost_reply_mode == LostReplyMode.DROP:
                drop(request)
                raise _Dropped("lost_reply_dropped")
            raise Unavailable("The service is currently unavailable.")
        reply = state.dice.reply_fault(state.faults, method)  # the job exists either way
    if reply != FaultAction.NONE:
        call.outcome = reply.value
        return garbled(request, method, reply, body)
    return json_response(body)


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    return wire.parse_json_body(raw)


def _render(request: web.Request, state: EmulatorState, job_view: dict[str, Any]) -> dict[str, Any]:
    return wire.render_tuning_job(job_view, enum_as_int=wire.wants_int_enums(request.query),
                                  api_version=request.match_info["version"])


async def _create(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    body = await _read_json(request)
    info = request.match_info
    where = {"api_version": info["version"], "project": info["project"],
             "location": info["location"]}
    spec = state.validate_create(body, api_version=info["version"])  # 400s answer at once
    if state.dice.roll(state.faults.late_create_rate):
        raise _LateCreate(spec, body, where)
    job = state.commit_create(spec, body, **where)
    return _render(request, state, state.view(job))


async def _get(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    job = state.get(request.match_info["location"], request.match_info["job"])
    return _render(request, state, state.view(job))


async def _list(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    query = request.query
    cfg = state.config
    page_size = wire.parse_page_size(query.get("pageSize", query.get("page_size")),
                                     default=cfg.default_page_size, maximum=cfg.max_page_size)
    page, token = state.list_views(
        request.match_info["location"],
        filter_text=query.get("filter", ""),
        page_size=page_size,
        page_token=query.get("pageToken", query.get("page_token", "")),
    )
    result: dict[str, Any] = {}
    if page:
        result["tuningJobs"] = [_render(request, state, shown) for _, shown in page]
    if token:
        result["nextPageToken"] = token
    return result


async def _cancel(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    # CancelTuningJobRequest has no body fields: an empty body or {}; anything else is refused
    # (unknown names only in strict mode), before anything changes.
    wire.parse_empty_request(await _read_json(request),
                             ignore_unknown=not state.config.strict_unknown_fields)
    job_id = request.match_info["job"].partition(":")[0]
    state.cancel(request.match_info["location"], job_id)
    return {}


async def _cancel_check(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    """A cancel whose answer will be garbled: same checks and errors, but nothing changes."""
    wire.parse_empty_request(await _read_json(request),
                             ignore_unknown=not state.config.strict_unknown_fields)
    state.check_cancel(request.match_info["location"], request.match_info["job"].partition(":")[0])
    return {}


async def _get_experiment(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    info = request.match_info
    return state.experiment_context(info["location"], info["store"], info["context"])


async def _method_not_found(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    raise NotFound(METHOD_NOT_FOUND_MESSAGE)


async def _unimplemented(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    raise Unimplemented("Operation is not implemented, or supported, or enabled.")


# --------------------------------------------------------------------------- OAuth token


async def _token(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    form: dict[str, str] = {}
    if request.content_type == "application/json":
        body = await _read_json(request)
        if isinstance(body, dict):
            form = {str(k): str(v) for k, v in body.items()}
    else:
        posted = await request.post()
        form = {k: v for k, v in posted.items() if isinstance(v, str)}
    try:
        answer = state.tokens.grant(form, state.now())
    except OAuthError as err:
        state.record_request("token", "400")
        log.info("token.refused", error=err.error, grant_type=form.get("grant_type", ""))
        return json_response(err.to_json(), status=400)
    state.record_request("token", "200")
    log.info("token.issued", grant_type=form.get("grant_type", ""),
             expires_in=answer["expires_in"])
    return json_response(answer)


# --------------------------------------------------------------------------- admin / inspection


async def _admin_state(request: web.Request) -> web.StreamResponse:
    return json_response(_state(request).snapshot())


async def _admin_get_faults(request: web.Request) -> web.StreamResponse:
    return json_response(_state(request).faults.to_json())


async def _admin_set_faults(request: web.Request) -> web.StreamResponse:
    """Replace the runtime faults with exactly what the body says ({} clears them)."""
    state = _state(request)
    body = await _read_json(request)
    try:
        faults = Faults.from_json(body)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    state.faults = faults
    log.info("faults.set", faults=faults.to_json())
    return json_response(faults.to_json())


async def _admin_reset(request: web.Request) -> web.StreamResponse:
    _state(request).reset()
    log.info("emulator.reset")
    return json_response({})


async def _admin_advance(request: web.Request) -> web.StreamResponse:
    """Move a manual clock forward: {"seconds": float}. Lets a standalone emulator skip time."""
    state = _state(request)
    body = await _read_json(request)
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise InvalidArgument('"seconds" must be a non-negative number')
    clock = state.clock
    if not isinstance(clock, ManualClock):
        raise InvalidArgument("the emulator runs on the real clock; time cannot be advanced")
    clock.advance(float(seconds))
    state.advance()
    return json_response({"now": wire.format_timestamp(state.now())})


# --------------------------------------------------------------------------- in-process runner


class Emulator:
    """The emulator as an in-process server: `async with Emulator(cfg) as emu: emu.url ...`.
    With a state_dir its jobs are kept there across restarts (see persist.py)."""

    def __init__(self, config: EmulatorConfig | None = None, *, clock: Clock | None = None,
                 host: str = "127.0.0.1", port: int = 0, state_dir: Path | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self.state = (EmulatorState(self.config, self.clock) if state_dir is None
                      else PersistentState(state_dir, self.config, self.clock))
        self.app = make_app(self.state)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Base URL such as http://127.0.0.1:8471 (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def advance(self, seconds: float) -> None:
        """Advance a manual clock and apply every transition that became due."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs the emulator to run on a ManualClock")
        self.clock.advance(seconds)
        self.state.advance()

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        host = host if host is not None else self._host
        port = port if port is not None else self._port
        if isinstance(self.state, PersistentState):
            self.state.open()  # before the first request: the saved jobs answer it
        # A short shutdown timeout: idle keep-alive clients must not delay stop().
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            if isinstance(self.state, PersistentState):
                self.state.close()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self._url = f"http://{shown}:{bound_port}"
        if not isinstance(self.clock, ManualClock) and self.config.tick_seconds > 0:
            self._ticker = asyncio.create_task(self._tick())
        log.info("emulator.started", url=self._url, project_number=self.config.project_number,
                 job_seconds=self.config.job_seconds, pending_seconds=self.config.pending_seconds,
                 max_concurrent=self.config.max_concurrent,
                 quota_mode=self.config.quota_mode.value)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("emulator.stopped", url=self._url)
        if isinstance(self.state, PersistentState):
            self.state.close()

    async def _tick(self) -> None:
        # Transitions are exact without this (they are replayed lazily); the ticker only makes
        # the transition log lines appear when they happen rather than at the next request.
        while True:
            delay_s = self.config.tick_seconds
            next_s = self.state.next_event_s()
            if next_s is not None:
                delay_s = min(delay_s, max(0.0, next_s - self.clock.now()))
            await asyncio.sleep(delay_s)
            self.state.advance()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
