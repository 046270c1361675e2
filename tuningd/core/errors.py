"""The one exception root of tuningd; each error knows its Google canonical status and HTTP code."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar


class Code(IntEnum):
    """google.rpc.Code: canonical gRPC codes (used inside TuningJob.error and for status names)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# Canonical status -> HTTP status, as Google front ends map them (spec §5).
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# HTTP status -> the status name Google uses when only the HTTP code is known.
_STATUS_FOR_HTTP: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    413: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def code_for_http(http_status: int) -> Code:
    """The canonical code Google pairs with an HTTP status (UNKNOWN when there is none)."""
    if http_status in _STATUS_FOR_HTTP:
        return _STATUS_FOR_HTTP[http_status]
    if 400 <= http_status < 500:
        return Code.FAILED_PRECONDITION
    return Code.UNKNOWN


class TuningdError(Exception):
    """Root of every error tuningd raises on purpose. Carries a Google canonical code."""

    code: ClassVar[Code] = Code.INTERNAL

    def __init__(self, message: str, *, http_status: int | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status if http_status is not None else HTTP_STATUS[self.code]
        self.details = details or []

    @property
    def status(self) -> str:
        return self.code.name


class InvalidArgument(TuningdError):
    code = Code.INVALID_ARGUMENT


class FailedPrecondition(TuningdError):
    code = Code.FAILED_PRECONDITION


class NotFound(TuningdError):
    code = Code.NOT_FOUND


class AlreadyExists(TuningdError):
    code = Code.ALREADY_EXISTS


class PermissionDenied(TuningdError):
    code = Code.PERMISSION_DENIED


class Unauthenticated(TuningdError):
    code = Code.UNAUTHENTICATED


class ResourceExhausted(TuningdError):
    code = Code.RESOURCE_EXHAUSTED


class Unavailable(TuningdError):
    code = Code.UNAVAILABLE


class StoreError(Unavailable):
    """The job store failed to read or write (disk full, read-only, I/O error, ...).

    HTTP 503 UNAVAILABLE: nothing was changed and the same request may succeed once an operator
    fixes the disk. The message says what happened in plain words; `sqlite_error` is SQLite's
    error name (e.g. "SQLITE_FULL", empty when unknown) and the original sqlite3 error is the
    exception's __cause__."""

    def __init__(self, message: str, *, sqlite_error: str = "", writing: bool = True) -> None:
        metadata = {"sqlite_error": sqlite_error} if sqlite_error else {}
        super().__init__(message, details=[{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "STORE_UNAVAILABLE",
            "domain": "tuningd",
            "metadata": metadata,
        }])
        self.sqlite_error = sqlite_error
        self.writing = writing


class DeadlineExceeded(TuningdError):
    code = Code.DEADLINE_EXCEEDED


class Internal(TuningdError):
    code = Code.INTERNAL


class Unimplemented(TuningdError):
    code = Code.UNIMPLEMENTED


class Aborted(TuningdError):
    code = Code.ABORTED


class Cancelled(TuningdError):
    code = Code.CANCELLED


class Unknown(TuningdError):
    code = Code.UNKNOWN


class OutOfRange(TuningdError):
    code = Code.OUT_OF_RANGE


class DataLoss(TuningdError):
    code = Code.DATA_LOSS


class Ok(TuningdError):
    """Only for completeness of error_for: never raised."""

    code = Code.OK


class PayloadTooLarge(InvalidArgument):
    """A request body over the configured limit (HTTP 413, status INVALID_ARGUMENT)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, http_status=413)


class ConfigError(TuningdError):
    """Invalid configuration; the message names the offending key."""

    code = Code.INVALID_ARGUMENT


class IllegalTransition(TuningdError):
    """A (state, event) pair the job state machine does not allow; nothing was changed."""

    code = Code.FAILED_PRECONDITION


class StoreLocked(TuningdError):
    """Another daemon already owns the database."""

    code = Code.FAILED_PRECONDITION


# RemoteError kinds: what a failed Vertex call means for the caller (set by the Vertex client).
PERMANENT = "permanent"  # a definite refusal; repeating it will not help
TRANSIENT = "transient"  # try again later; on a create: nothing was sent
QUOTA = "quota"  # 429
AUTH = "auth"  # 401 after one token refresh, or credentials that cannot be used
UNKNOWN_OUTCOME = "unknown_outcome"  # create only: the job may exist (timeout, reset, 5xx)
# Refused before sending because it can never be valid (e.g. a parent that is no resource id):
# nothing reached Vertex, and repeating it cannot help.
INVALID_REQUEST = "invalid_request"


class RemoteError(TuningdError):
    """An error answer from Vertex, classified for the engine (see adapters/vertex_http.py)."""

    code = Code.UNKNOWN

    def __init__(self, message: str, *, http_status: int, status: str | None = None,
                 kind: str = "unknown") -> None:
        super().__init__(message, http_status=http_status)
        self.remote_status = status or code_for_http(http_status).name
        # "permanent" | "transient" | "quota" | "unknown_outcome" | "auth"
        self.kind = kind

    @property
    def status(self) -> str:
        return self.remote_status


_BY_CODE: dict[Code, type[TuningdError]] = {
    Code.INVALID_ARGUMENT: InvalidArgument,
    Code.FAILED_PRECONDITION: FailedPrecondition,
    Code.NOT_FOUND: NotFound,
    Code.ALREADY_EXISTS: AlreadyExists,
    Code.PERMISSION_DENIED: PermissionDenied,
    Code.UNAUTHENTICATED: Unauthenticated,
    Code.RESOURCE_EXHAUSTED: ResourceExhausted,
    Code.UNAVAILABLE: Unavailable,
    Code.DEADLINE_EXCEEDED: DeadlineExceeded,
    Code.INTERNAL: Internal,
    Code.UNIMPLEMENTED: Unimplemented,
    Code.ABORTED: Aborted,
    Code.CANCELLED: Cancelled,
    Code.UNKNOWN: Unknown,
    Code.OUT_OF_RANGE: OutOfRange,
    Code.DATA_LOSS: DataLoss,
    Code.OK: Ok,
}


def error_for(code: Code, message: str) -> TuningdError:
    """An error instance of the class that matches a canonical code."""
    return _BY_CODE[code](message)
