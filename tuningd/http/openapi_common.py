"""The building blocks of the OpenAPI description: references, parameters, JSON answers and
the error answers every route shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ALWAYS_POSSIBLE", "ERROR_DESCRIPTIONS", "STRING", "error_responses",
           "json_schema_response", "param", "ref"]

STRING = {"type": "string"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def error_responses(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": ref("ErrorEnvelope")}},
        }
        for code in sorted({*codes, *ALWAYS_POSSIBLE})
    }


# What every route may answer, whatever it does: 400 for a request the HTTP layer refuses
# (malformed request line or headers, a line or header over 64 KiB, too many headers, an
# unsupported or undecodable Content-Encoding) and 500 for a bug.
ALWAYS_POSSIBLE: tuple[int, ...] = (400, 500)

ERROR_DESCRIPTIONS = {
    400: "INVALID_ARGUMENT (or FAILED_PRECONDITION): a value the route refuses, or a request "
         "the HTTP layer refuses (malformed request line or header, a line or header over "
         "64 KiB, too many headers, a Content-Encoding other than gzip or deflate, a body "
         "that is not in its declared Content-Encoding)",
    401: "UNAUTHENTICATED: missing or wrong bearer token",
    403: "PERMISSION_DENIED: project or location not served",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS: the requestId was used for a different request",
    413: "request body over the size limit (status INVALID_ARGUMENT)",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL: an unexpected failure inside tuningd (a bug; the log has the details)",
    503: "UNAVAILABLE: not ready or shutting down, or the job store cannot be read or "
         "written (the message says why: disk full, read-only database, disk I/O error); "
         "nothing was changed, retry later",
    504: "DEADLINE_EXCEEDED",
}


def json_schema_response(description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def param(name: str, where: str, description: str, schema: Mapping[str, Any],
           *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description,
            "required": required or where == "path", "schema": dict(schema)}
