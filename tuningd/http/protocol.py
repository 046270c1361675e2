"""Refusals made below the routes (request line, headers, body encodings) in Google's envelope."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from tuningd.core.errors import Code, TuningdError, error_for
from tuningd.http.envelope import INTERNAL_MESSAGE, json_response, malformed_request
from tuningd.vertex import wire

log = structlog.get_logger("tuningd.http.api")


class EnvelopeRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering what it refuses on its own (unparsable request
    lines and headers, too many or too long headers, undecodable bodies) in Google's envelope
    with Google's Content-Type, and logging one line without the request's bytes."""

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer is on the wire already: all that is left is closing.
            raise ConnectionError("an answer was partly sent; closing the connection")
        if status >= 500:
            log.error("request.failed", status=status, exc_info=exc)
            err: TuningdError = error_for(Code.INTERNAL, INTERNAL_MESSAGE)
            err.http_status = status
        else:
            err = malformed_request(exc, status)
            log.info("request.malformed", status=err.http_status, reason=err.message,
                     error=type(exc).__name__ if exc is not None else None)
        response = json_response(wire.error_envelope(err), status=err.http_status)
        # The rest of the stream cannot be trusted to start at a request boundary.
        response.force_close()
        return response


    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), web.RequestPayloadError):
            # aiohttp reads on past an undecodable body after its 400 was sent, meets the same
            # error again and would log it with a traceback per request: the 400 was logged.
            log.debug("request.body_dropped", error=str(kw["exc_info"]).splitlines()[-1][:100])
            return
        super().log_exception(*args, **kw)


class _EnvelopeServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class EnvelopeAppRunner(web.AppRunner):
    """web.AppRunner whose connections are EnvelopeRequestHandlers."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds its Server itself (after the app's startup signals); only the
        # handler class differs, so the same object is handed on with the subclass's __call__.
        server.__class__ = _EnvelopeServer
        return server

