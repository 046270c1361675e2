"""Fault answers on the Vertex routes: error rules, garbled 200 replies, dropped connections."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from tuningd.core.errors import TuningdError
from tuningd.emulator.faults import FaultAction, Faults
from tuningd.emulator.google_errors import rule_error
from tuningd.emulator.state import EmulatorState
from tuningd.http.envelope import JSON_CONTENT_TYPE

log = structlog.get_logger("tuningd.emulator")

# What a misbehaving proxy in front of the API might send with a 200.
MALFORMED_BODY = (b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Proxy Error</title>"
                  b"</head>\n<body><h1>Proxy Error</h1>\n<p>The proxy server received an invalid "
                  b"response from an upstream server.</p>\n</body></html>\n")


def drop(request: web.Request) -> None:
    """Close the connection without writing anything."""
    transport = request.transport
    if transport is not None:
        transport.close()


def rule_hit(request: web.Request, state: EmulatorState, faults: Faults,
             method: str) -> TuningdError | None:
    """The error of the first matching error rule whose roll hits, or None."""
    info = request.match_info
    project, location = info.get("project", ""), info.get("location", "")
    rule = state.dice.error_rule(faults, method, project, location)
    if rule is None:
        return None
    log_fault(request, method, "error_rule", status=rule.status,
              status_name=rule.effective_status_name, reason=rule.effective_reason)
    return rule_error(rule, method=method, api_version=info.get("version", "v1"),
                      project=project, location=location,
                      job_id=info.get("job", "").partition(":")[0],
                      project_number=state.config.project_number)


def garbled(request: web.Request, method: str, reply: FaultAction,
            body: Any) -> web.Response:
    """A 200 whose body a client cannot read: an HTML page, or the JSON cut to half its bytes
    (Content-Length matches what is sent)."""
    log_fault(request, method, reply.value)
    if reply == FaultAction.MALFORMED:
        return web.Response(body=MALFORMED_BODY, status=200,
                            headers={"Content-Type": "text/html; charset=UTF-8"})
    raw = json.dumps(body).encode("utf-8")
    return web.Response(body=raw[:len(raw) // 2], status=200,
                        headers={"Content-Type": JSON_CONTENT_TYPE})


def log_fault(request: web.Request, method: str, fault: str, **fields: Any) -> None:
    log.info("fault.injected", fault=fault, api_method=method, path=request.path, **fields)
