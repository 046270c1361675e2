"""Vertex AI tuningJobs REST client on aiohttp, with the error classes the engine relies on."""

from __future__ import annotations

import json
import logging
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import aiohttp

from tuningd import __version__
from tuningd.adapters.google_auth import TokenSource

# The error kinds (RemoteError.kind) this client raises are defined with RemoteError.
from tuningd.core.errors import (
    AUTH,
    INVALID_REQUEST,
    PERMANENT,
    QUOTA,
    TRANSIENT,
    UNKNOWN_OUTCOME,
    InvalidArgument,
    RemoteError,
    TuningdError,
    code_for_http,
)

# JobList is the alias to use inside VertexClient, where the name `list` is the method.
from tuningd.ports import Forwarded, JobDict, JobList, split_job_name
from tuningd.vertex import wire

__all__ = ["AUTH", "FORWARD_PREFIXES", "INVALID_REQUEST", "PERMANENT", "QUOTA", "TRANSIENT",
           "UNKNOWN_OUTCOME", "Forwarded", "JobDict", "JobList", "Observer", "VertexClient",
           "default_endpoint", "split_job_name"]

# Statuses worth retrying later on idempotent calls (spec §5, design §5).
_TRANSIENT_HTTP: Final = frozenset({408, 500, 502, 503, 504})
_MULTI_REGIONS: Final = frozenset({"us", "eu"})
_MAX_ERROR_TEXT_CHARS: Final = 500
# Path prefixes forward() may use: the API versions, and `ui`, under which the v1beta1 GAPIC
# REST clients poll long-running operations (observed with google-cloud-aiplatform 2.7).
FORWARD_PREFIXES: Final = (*wire.API_VERSIONS, "ui")
# What a forwarded path may hold after the prefix: resource-name characters only, so that a path
# can neither leave the prefix ("..", "//") nor carry a query or fragment of its own.
_FORWARD_PATH_RE: Final = re.compile(r"(?:/[A-Za-z0-9][A-Za-z0-9_.~@:-]*)+")

Observer = Callable[[str, str, float], None]

_log = logging.getLogger(__name__)


def default_endpoint(location: str) -> str:
    """Google's API host for a location: regional, the us/eu multi-region, or global."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in _MULTI_REGIONS:
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _check_parent(project: str, location: str) -> None:
    """Refuse a parent Vertex would refuse, before anything is sent (the location also becomes
    part of a host name: it must never carry anything but a label)."""
    try:
        wire.check_parent(project, location)
    except InvalidArgument as exc:
        raise RemoteError(f"projects/{project}/locations/{location} is not a valid parent: "
                          f"{exc.message}", http_status=400, status="INVALID_ARGUMENT",
                          kind=INVALID_REQUEST) from None


class VertexClient:
    """Create, get, list and cancel Vertex tuning jobs; every failure is a classified RemoteError.

    Kinds: "permanent" (a definite rejection; 404 keeps http_status 404), "quota" (429),
    "auth" (401 after one refresh-and-retry, or credentials unusable), "transient" (408/500/502/
    503/504, timeouts, connection errors on get/list/cancel), "unknown_outcome" (create only: the
    job may exist; reconcile by label before resubmitting). The only retry inside is the single one
    after a 401.

    Every call takes the API version to use (`api_version`, "v1" or "v1beta1"): a job is created
    and read at the version its client used, so that what the version knows reaches Vertex and
    comes back. None means the client's default (`api_version` at construction)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenSource,
        *,
        endpoint: str = "",
        api_version: str = "v1",
        timeout_s: float = 60.0,
        observer: Observer | None = None,
    ) -> None:
        if api_version not in wire.API_VERSIONS:
            raise InvalidArgument(f"unsupported api_version {api_version!r}")
        self._session = session
        self._tokens = tokens
        self._endpoint = endpoint.rstrip("/")
        self._api_version = api_version
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._observer = observer
        self._static_headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "x-goog-api-client": f"tuningd/{__version__}",
            "User-Agent": (
                f"tuningd/{__version__} aiohttp/{aiohttp.__version__} "
                f"python/{platform.python_version()}"
            ),
        }

    @property
    def api_version(self) -> str:
        """The default version: for calls that name none (tuningd's own, such as the sweep)."""
        return self._api_version

    def version(self, api_version: str | None) -> str:
        """The version a call uses: the one given, else the default."""
        version = api_version or self._api_version
        if version not in wire.API_VERSIONS:
            raise InvalidArgument(f"unsupported api_version {version!r}")
        return version

    def base_url(self, location: str, api_version: str | None = None) -> str:
        """Scheme, host and version prefix used for jobs in this location."""
        host = self._endpoint or default_endpoint(location)
        return f"{host}/{self.version(api_version)}"

    def _collection_url(self, project: str, location: str, api_version: str | None) -> str:
        _check_parent(project, location)
        return (f"{self.base_url(location, api_version)}/projects/{project}/locations/"
                f"{location}/tuningJobs")

    def _job_url(self, name: str, api_version: str | None) -> str:
        _, location, _ = split_job_name(name)
        return f"{self.base_url(location, api_version)}/{name}"

    async def create(self, project: str, location: str, job: Mapping[str, Any], *,
                     api_version: str | None = None) -> dict[str, Any]:
        """POST a canonical TuningJob, rendered at `api_version` (a body parsed at that version
        loses nothing); the created job in canonical form.

        Never retried here: a timeout, a dropped connection, a 5xx or an unreadable 2xx body
        raise kind "unknown_outcome" because the job may have been created."""
        version = self.version(api_version)
        body = wire.render_tuning_job(job, api_version=version)
        raw = await self._call(
            "create", "POST", self._collection_url(project, location, version), body=body,
            create=True,
        )
        try:
            return wire.parse_tuning_job(json.loads(raw), ignore_unknown=True)
        except (ValueError, TypeError, TuningdError) as exc:
            raise RemoteError(
                f"create: unreadable success response ({type(exc).__name__}); the job may exist",
                http_status=502, status="UNKNOWN", kind=UNKNOWN_OUTCOME,
            ) from exc

    async def get(self, name: str, *, api_version: str | None = None) -> dict[str, Any]:
        """GET one job by its full resource name; 404 is kind "permanent", http_status 404."""
        raw = await self._call("get", "GET", self._job_url(name, api_version))
        return _parse_job_or_transient("get", raw)

    async def list(
        self,
        project: str,
        location: str,
        *,
        filter: str = "",
        page_size: int = 100,
        page_token: str = "",
        api_version: str | None = None,
    ) -> tuple[JobList, str]:
        """One page of jobs (canonical form) and the next page token ("" on the last page)."""
        params: dict[str, str] = {}
        if filter:
            params["filter"] = filter
        if page_size > 0:
            params["pageSize"] = str(page_size)
        if page_token:
            params["pageToken"] = page_token
        raw = await self._call(
            "list", "GET", self._collection_url(project, location, api_version), params=params
        )
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise TypeError("list response is not a JSON object")
            items = body.get("tuningJobs") or []
            if not isinstance(items, list):
                raise TypeError("tuningJobs is not a list")
            jobs = [wire.parse_tuning_job(item, ignore_unknown=True) for item in items]
            next_token = body.get("nextPageToken") or ""
            if not isinstance(next_token, str):
                raise TypeError("nextPageToken is not a string")
        except (ValueError, TypeError, TuningdError) as exc:
            raise _bad_body("list", exc) from exc
        return jobs, next_token

    async def list_all(
        self, project: str, location: str, *, filter: str = "",
        page_size: int = 100, max_pages: int = 10_000, api_version: str | None = None,
    ) -> JobList:
        """Every job matching the filter, following all pages; a repeating page token or more
        than max_pages pages is a (transient) RemoteError rather than an endless loop."""
        jobs: JobList = []
        seen_tokens: set[str] = set()
        token = ""
        for _ in range(max_pages):
            page, token = await self.list(
                project, location, filter=filter, page_size=page_size, page_token=token,
                api_version=api_version,
            )
            jobs.extend(page)
            if not token:
                return jobs
            if token in seen_tokens:
                raise RemoteError("list: the server repeated a page token", http_status=502,
                                  status="UNAVAILABLE", kind=TRANSIENT)
            seen_tokens.add(token)
        raise RemoteError(f"list: more than {max_pages} pages", http_status=502,
                          status="UNAVAILABLE", kind=TRANSIENT)

    async def cancel(self, name: str, *, api_version: str | None = None) -> None:
        """POST :cancel. Cancelling an ended job is kind "permanent", status FAILED_PRECONDITION."""
        await self._call("cancel", "POST", self._job_url(name, api_version) + ":cancel", body={})

    async def forward(self, http_method: str, path: str, *, location: str, api_version: str,
                      query: Sequence[tuple[str, str]] = (),
                      body: bytes | None = None) -> Forwarded:
        """One call outside tuningJobs CRUD (the pass-through), with the daemon's credentials:
        `path` follows the version prefix (e.g. `/projects/p/locations/l/models/m`), `location`
        picks the host. Any HTTP answer is returned as it came (after one token refresh on a
        401); only transport failures raise (kind "transient": 503, or 504 on a timeout)."""
        if api_version not in FORWARD_PREFIXES:
            raise InvalidArgument(f"unsupported api_version {api_version!r}")
        if not _FORWARD_PATH_RE.fullmatch(path) or "/../" in f"{path}/":
            raise InvalidArgument(f"not a forwardable path: {path!r}")
        _check_parent(*_parent_of(path, location))
        host = self._endpoint or default_endpoint(location)
        url = f"{host}/{api_version}{path}"
        for attempt in (1, 2):
            headers = await self._headers()
            started_s = time.monotonic()
            try:
                async with self._session.request(
                    http_method, url, data=body, params=list(query) or None, headers=headers,
                    timeout=self._timeout, allow_redirects=False,
                ) as response:
                    status = response.status
                    answer = Forwarded(status, dict(response.headers), await response.read())
            except (TimeoutError, aiohttp.ClientError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                self._observe("passthrough", "timeout" if timed_out else "error", started_s)
                raise self._transport_error("passthrough", exc, create=False) from exc
            self._observe("passthrough", str(status), started_s)
            if status == 401 and attempt == 1:
                # Rejected before anything was done: even a POST is safe to send again.
                self._tokens.invalidate()
                continue
            return answer
        raise AssertionError("unreachable")  # the loop either returns or raises

    async def _headers(self) -> dict[str, str]:
        """The static headers plus a fresh bearer token (none when anonymous)."""
        token = await self._tokens.token()
        headers = dict(self._static_headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _call(
        self,
        method: str,
        http_method: str,
        url: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        create: bool = False,
    ) -> bytes:
        """Send one request (twice after a 401); the 2xx body, or a classified RemoteError."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for attempt in (1, 2):
            # A failure here happens before anything is sent, so even create is safe to redo.
            headers = await self._headers()
            started_s = time.monotonic()
            try:
                async with self._session.request(
                    http_method, url, data=data, params=params, headers=headers,
                    timeout=self._timeout, allow_redirects=False,
                ) as response:
                    status = response.status
                    raw = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                self._observe(method, "timeout" if timed_out else "error", started_s)
                raise self._transport_error(method, exc, create=create) from exc
            self._observe(method, str(status), started_s)
            if 200 <= status < 300:
                return raw
            if status == 401 and attempt == 1:
                # The front end rejected the token before doing anything: refresh and retry once.
                self._tokens.invalidate()
                continue
            raise _http_error(method, status, raw, create=create)
        raise AssertionError("unreachable")  # the loop either returns or raises

    def _observe(self, method: str, code: str, started_s: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(method, code, time.monotonic() - started_s)
        except Exception:
            # A metrics bug must not turn a finished create into an "error" the engine misreads.
            _log.exception("observer.failed")

    def _transport_error(self, method: str, exc: BaseException, *, create: bool) -> RemoteError:
        timed_out = isinstance(exc, TimeoutError)
        # Connecting failed (refused, DNS, TLS handshake, connect timeout) or the URL was
        # unusable: nothing was sent, so even a create definitely did not happen.
        never_sent = isinstance(
            exc,
            aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError | aiohttp.InvalidURL,
        )
        kind = UNKNOWN_OUTCOME if create and not never_sent else TRANSIENT
        what = f"timed out after {self._timeout_s:g} s" if timed_out else "connection failed"
        message = f"{method}: {what} ({type(exc).__name__})"
        if kind == UNKNOWN_OUTCOME:
            message += "; the job may exist"
        if timed_out:
            return RemoteError(message, http_status=504, status="DEADLINE_EXCEEDED", kind=kind)
        return RemoteError(message, http_status=503, status="UNAVAILABLE", kind=kind)


def _parent_of(path: str, location: str) -> tuple[str, str]:
    """The (project, location) a forwarded path names; its location must be the one whose host
    is called (a location is part of the host name)."""
    parts = path.split("/")
    if len(parts) < 5 or parts[1] != "projects" or parts[3] != "locations":
        raise InvalidArgument(f"not a forwardable path: {path!r}")
    if parts[4] != location:
        raise InvalidArgument(f"path location {parts[4]!r} is not {location!r}")
    return parts[2], parts[4]


def _parse_job_or_transient(method: str, raw: bytes) -> dict[str, Any]:
    try:
        return wire.parse_tuning_job(json.loads(raw), ignore_unknown=True)
    except (ValueError, TypeError, TuningdError) as exc:
        raise _bad_body(method, exc) from exc


def _bad_body(method: str, exc: BaseException) -> RemoteError:
    # A garbled 2xx on a read is retried later rather than failing the job.
    return RemoteError(f"{method}: unreadable success response ({type(exc).__name__}: {exc})",
                       http_status=502, status="UNKNOWN", kind=TRANSIENT)


def _http_error(method: str, status: int, raw: bytes, *, create: bool) -> RemoteError:
    """Classify a non-2xx answer, keeping Google's message and status from its error envelope."""
    message, status_name, details = _parse_envelope(raw, status)
    if status == 429:
        kind = QUOTA
    elif status == 401:
        kind = AUTH
    elif create and (status >= 500 or status == 408):
        kind = UNKNOWN_OUTCOME
    elif status in _TRANSIENT_HTTP:
        kind = TRANSIENT
    elif create and not 400 <= status < 500:
        # An unexpected 1xx/3xx on create proves nothing either way.
        kind = UNKNOWN_OUTCOME
    else:
        kind = PERMANENT
    error = RemoteError(message, http_status=status, status=status_name, kind=kind)
    error.details = details
    return error


def _parse_envelope(raw: bytes, http_status: int) -> tuple[str, str, list[dict[str, Any]]]:
    """(message, status name, details) from `{"error": {...}}`; any other body becomes the text."""
    fallback_status = code_for_http(http_status).name
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    # Some front ends wrap the envelope in a one-element list.
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        status_name = error.get("status")
        details = error.get("details")
        return (
            message if isinstance(message, str) and message else f"HTTP {http_status}",
            status_name if isinstance(status_name, str) and status_name else fallback_status,
            [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
        )
    message = text[:_MAX_ERROR_TEXT_CHARS] if text else f"HTTP {http_status}"
    return message, fallback_status, []

