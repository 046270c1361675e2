"""HTTP plumbing of the control API: its request log and metrics, HTTP error texts, bearer auth."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from tuningd.adapters.log import enabled_for
from tuningd.core.errors import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    TuningdError,
    Unauthenticated,
    code_for_http,
    error_for,
)
from tuningd.http.envelope import METHOD_NOT_FOUND_MESSAGE, Handler, answer_in_envelope
from tuningd.vertex import wire

# The control API's logger: its request lines are the API's own.
LOGGER_NAME = "tuningd.http.api"
log = structlog.get_logger(LOGGER_NAME)

# Path prefixes of Vertex's API surface served by tuningd (the pass-through serves `ui` too): under
# these, a path no route serves is a method Google's front end does not know.
API_PREFIXES: frozenset[str] = frozenset({*wire.API_VERSIONS, "ui"})

# Maps a check name ("store", "credentials", ...) to True when healthy, else False or a reason.
ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool | str]]]
# (method, route template, HTTP status) per answered request: Metrics.observe_api_request.
RequestObserver = Callable[[str, str, int], None]

# Paths answered without a bearer token: probes and scrapers carry no credentials, and the status
# page's shell (no data: its script asks for the token and sends it) is a plain navigation.
OPEN_PATHS: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics", "/"})

UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
# Content codings a request body may carry: aiohttp decodes gzip and deflate itself (br and zstd
# only with optional packages this daemon does not ask for); a body in any other coding would
# reach the JSON parser still encoded, so it is refused as a whole rather than misread.
ACCEPTED_CONTENT_ENCODINGS: frozenset[str] = frozenset({"identity", "gzip", "deflate"})


# --------------------------------------------------------------------------------------------
# Middleware


def error_middleware(max_body_bytes: int,
                      observe: RequestObserver | None) -> Any:
    """Google's error envelope for every failure, and one log line per request."""

    def http_error(request: web.Request, exc: web.HTTPException) -> TuningdError:
        return _http_error(request, exc, max_body_bytes)

    async def checked(request: web.Request, handler: Handler) -> web.StreamResponse:
        check_content_encoding(request)
        return await handler(request)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await answer_in_envelope(
            request, lambda r: checked(r, handler), http_error=http_error, logger=log)
        # Access lines are debug (probes, scrapes and CLI calls would drown the job events);
        # a 5xx is the daemon's own trouble and worth a warning. A debug line that would be
        # dropped is not built (its cost is a tenth of a bare create's).
        if response.status >= 500 or enabled_for(LOGGER_NAME, logging.DEBUG):
            duration_ms = (time.perf_counter() - started) * 1000.0
            emit = log.warning if response.status >= 500 else log.debug
            emit("request.answered", method=request.method, path=request.path,
                 status=response.status, duration_ms=round(duration_ms, 3))
        if observe is not None:
            observe(request.method, route_template(request), response.status)
        return response

    return middleware


def check_content_encoding(request: web.Request) -> None:
    """Refuse a Content-Encoding aiohttp would pass through undecoded (400 INVALID_ARGUMENT)."""
    value = request.headers.get("Content-Encoding")
    if value is None or value.strip().lower() in ACCEPTED_CONTENT_ENCODINGS:
        return
    shown = f"'{value}'" if value.isascii() and value.isprintable() and len(value) <= 40 else ""
    raise InvalidArgument(
        f"Content-Encoding {shown or '(unprintable)'} is not supported: send the body with "
        "Content-Encoding gzip or deflate, or uncompressed.")


def route_template(request: web.Request) -> str:
    # Raw paths would give Prometheus one series per job id; templates keep it bounded.
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def _http_error(request: web.Request, exc: web.HTTPException, max_body_bytes: int) -> TuningdError:
    if exc.status == 413:
        return PayloadTooLarge(f"Request payload size exceeds the limit: {max_body_bytes} bytes.")
    if exc.status == 404 and request.path.split("/", 2)[1] in API_PREFIXES:
        # Under an API prefix, a path no route serves (outside the pass-through's allow-list,
        # say) is a method Vertex's front end does not know.
        return NotFound(METHOD_NOT_FOUND_MESSAGE)
    if exc.status == 404:
        message = f"The requested URL {request.path} was not found on this server."
    elif exc.status == 405:
        # Google answers a method a known path does not map with 404 NOT_FOUND "Method not
        # found." (as the emulator does), not 405: one behaviour for Vertex and for tuningd.
        return NotFound(METHOD_NOT_FOUND_MESSAGE)
    else:
        message = exc.reason
    err = error_for(code_for_http(exc.status), message)
    err.http_status = exc.status
    return err


def auth_middleware(token: str | None) -> Any:
    """Bearer token check (constant time) on everything but the probe and scrape paths."""
    expected = token.encode("utf-8") if token is not None else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in OPEN_PATHS:
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            try:
                # aiohttp keeps undecodable header bytes as lone surrogates, which no token holds.
                presented_bytes = presented.strip().encode("utf-8")
            except UnicodeEncodeError:
                presented_bytes = b""
            ok = (scheme.lower() == "bearer" and bool(presented_bytes)
                  and hmac.compare_digest(presented_bytes, expected))
            if not ok:
                raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        return await handler(request)

    return middleware
