"""HTTP answers the daemon and the emulator share: JSON, Google's error envelope, limits."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong

from tuningd.core.errors import (
    Code,
    InvalidArgument,
    TuningdError,
    Unauthenticated,
    code_for_http,
    error_for,
)
from tuningd.vertex import wire

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Turns one of aiohttp's own HTTP errors (404, 405, 413, ...) into the error the envelope shows.
HttpErrorMapper = Callable[[web.Request, web.HTTPException], TuningdError]

# Google's Content-Type on every JSON answer.
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
INTERNAL_MESSAGE = "Internal error encountered."
# What Google's front ends answer (404 NOT_FOUND) for an HTTP method a known path does not map.
METHOD_NOT_FOUND_MESSAGE = "Method not found."
# Request line / header field limits: a 20 000-character filter, percent-encoded, must fit (the
# aiohttp default of 8190 bytes answers longer lines in plain text, outside Google's envelope).
MAX_REQUEST_LINE_BYTES = 65_536
# web.Application(handler_args=...) applying those limits.
HANDLER_ARGS: Mapping[str, Any] = {"max_line_size": MAX_REQUEST_LINE_BYTES,
                                   "max_field_size": MAX_REQUEST_LINE_BYTES}

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


def error_response(err: TuningdError) -> web.Response:
    """The error in Google's envelope, with the Bearer challenge on a 401."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, Unauthenticated) else None
    return json_response(wire.error_envelope(err), status=err.http_status, headers=headers)


def plain_http_error(request: web.Request, exc: web.HTTPException) -> TuningdError:
    """aiohttp's HTTP error as the envelope error of the same status and reason."""
    err = error_for(code_for_http(exc.status), exc.reason)
    err.http_status = exc.status
    return err


async def answer_in_envelope(request: web.Request, handler: Handler, *,
                             http_error: HttpErrorMapper, logger: Any) -> web.StreamResponse:
    """The handler's answer, or its failure in Google's envelope (internals to the log only)."""
    try:
        return await handler(request)
    except TuningdError as err:
        return error_response(err)
    except (HttpProcessingError, web.RequestPayloadError) as exc:
        # A body aiohttp could not decode (not gzip under Content-Encoding: gzip, a broken
        # chunk), raised where a handler reads it: the client's fault, not ours.
        cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else exc
        return error_response(malformed_request(cause, 400))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(http_error(request, exc))
    except Exception:
        # Internals (paths, SQL, tracebacks) go to the log only, never to the client.
        logger.exception("request.failed", method=request.method, path=request.path)
        return error_response(error_for(Code.INTERNAL, INTERNAL_MESSAGE))


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
