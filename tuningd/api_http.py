"""HTTP plumbing of the control API: Google's error envelope, bearer-token auth, JSON answers."""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong

from tuningd import wire
from tuningd.errors import (
    Code,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    TuningdError,
    Unauthenticated,
    code_for_http,
    error_for,
)

# The control API's logger: its request lines are the API's own.
log = structlog.get_logger("tuningd.api")

# Path prefixes of Vertex's API surface served by tuningd (the pass-through serves `ui` too): under
# these, a path no route serves is a method Google's front end does not know.
API_PREFIXES: frozenset[str] = frozenset({*wire.API_VERSIONS, "ui"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Maps a check name ("store", "credentials", ...) to True when healthy, else False or a reason.
ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool | str]]]
# (method, route template, HTTP status) per answered request: Metrics.observe_api_request.
RequestObserver = Callable[[str, str, int], None]

# Paths answered without a bearer token: probes and scrapers carry no credentials.
OPEN_PATHS: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics"})

UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INTERNAL_MESSAGE = "Internal error encountered."
# What Google's front ends answer (404 NOT_FOUND) for an HTTP method a known path does not map.
METHOD_NOT_FOUND_MESSAGE = "Method not found."
# Google's Content-Type on every JSON answer.
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
# Request line / header field limits: a 20 000-character filter, percent-encoded, must fit (the
# aiohttp default of 8190 bytes answers longer lines in plain text, outside Google's envelope).
MAX_REQUEST_LINE_BYTES = 65_536
# Content codings a request body may carry: aiohttp decodes gzip and deflate itself (br and zstd
# only with optional packages this daemon does not ask for); a body in any other coding would
# reach the JSON parser still encoded, so it is refused as a whole rather than misread.
ACCEPTED_CONTENT_ENCODINGS: frozenset[str] = frozenset({"identity", "gzip", "deflate"})

# aiohttp's parse errors quote the offending bytes (a header line may hold a bearer token):
# nothing from the first quoted value on reaches the client or the log.
_QUOTED = re.compile(r"""[:\s]*(?:b?['"]|bytearray\().*""", re.DOTALL)
_INSTALL_HINT = re.compile(r"\.?\s*Please install.*", re.DOTALL)
_MAX_REASON_CHARS = 200


def json_response(body: Any, *, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer with Google's exact Content-Type (`application/json; charset=UTF-8`)."""
    all_headers = {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
    return web.Response(body=json.dumps(body).encode("utf-8"), status=status,
                        headers=all_headers)


# --------------------------------------------------------------------------------------------
# Middleware


def error_middleware(max_body_bytes: int,
                      observe: RequestObserver | None) -> Any:
    """Google's error envelope for every failure, and one log line per request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            check_content_encoding(request)
            response = await handler(request)
        except TuningdError as err:
            response = _error_response(err)
        except (HttpProcessingError, web.RequestPayloadError) as exc:
            # A body aiohttp could not decode (not gzip under Content-Encoding: gzip, a broken
            # chunk), raised where a handler reads it: the client's fault, not ours.
            cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else exc
            response = _error_response(malformed_request(cause, 400))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error_response(_http_error(request, exc, max_body_bytes))
        except Exception:
            # Internals (paths, SQL, tracebacks) go to the log only, never to the client.
            log.exception("request.failed", method=request.method, path=request.path)
            response = _error_response(error_for(Code.INTERNAL, INTERNAL_MESSAGE))
        duration_ms = (time.perf_counter() - started) * 1000.0
        log.info("request.answered", method=request.method, path=request.path,
                 status=response.status, duration_ms=round(duration_ms, 3))
        if observe is not None:
            observe(request.method, route_template(request), response.status)
        return response

    return middleware


def malformed_request(exc: BaseException | None, status: int) -> TuningdError:
    """The envelope error for a request aiohttp could not parse or decode (never echoing it)."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else MAX_REQUEST_LINE_BYTES
        return InvalidArgument(
            f"Malformed HTTP request: the request line or a header field is longer than "
            f"{limit} bytes.")
    if isinstance(exc, ContentEncodingError):
        return InvalidArgument(
            f"The request body could not be decoded ({_reason(exc.message)}): send it with "
            "a Content-Encoding that matches it (gzip or deflate), or uncompressed.")
    if isinstance(exc, HttpProcessingError):
        return InvalidArgument(f"Malformed HTTP request: {_reason(exc.message)}.")
    err = error_for(code_for_http(status), "Malformed HTTP request.")
    err.http_status = status
    return err


def _reason(message: str) -> str:
    lines = (message or "").strip().splitlines()
    reason = _INSTALL_HINT.sub("", _QUOTED.sub("", lines[0] if lines else "")).rstrip(" .:")
    return reason[:_MAX_REASON_CHARS] or "bad request"


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


def _error_response(err: TuningdError) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, Unauthenticated) else None
    return json_response(wire.error_envelope(err), status=err.http_status, headers=headers)


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
