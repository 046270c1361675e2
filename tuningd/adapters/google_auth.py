"""Access tokens for Vertex calls: google-auth credentials refreshed off the event loop."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import google.auth
import google.auth.exceptions
import google.auth.transport

from tuningd.core.errors import ConfigError, RemoteError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# google-auth refreshes 3 min 45 s before expiry; short-lived tokens (the emulator's are seconds)
# get a quarter of their lifetime instead, so they are refreshed early but not on every call.
MAX_REFRESH_MARGIN_S = 225.0
REFRESH_MARGIN_FRACTION = 0.25
DEFAULT_TOKEN_HTTP_TIMEOUT_S = 30.0
_OAUTH_ERROR_CODE = re.compile(r"[a-z]{1,20}(?:_[a-z]{1,20}){0,3}")

_log = logging.getLogger(__name__)
# google-auth warns at each failed ADC lookup that the metadata server is not there; tuningd says
# once, with the fix, that no credentials work (adapters/preflight), and the job shows why.
logging.getLogger("google.auth._default").setLevel(logging.ERROR)


@runtime_checkable
class TokenSource(Protocol):
    """Where VertexClient gets the bearer token for each request."""

    async def token(self) -> str | None:
        """A currently valid access token, or None to send no Authorization header.

        Raises RemoteError(kind="auth") when credentials are rejected for good and
        RemoteError(kind="transient") when the token endpoint could not be reached."""
        ...

    def invalidate(self) -> None:
        """Forget the current token (after a 401) so the next token() fetches a new one."""
        ...


class StaticTokenSource:
    """Always the same token (tests, emulator, externally managed tokens)."""

    def __init__(self, token: str) -> None:
        self._token = token
        self.invalidations = 0

    def __repr__(self) -> str:
        # Never show the token itself.
        return "StaticTokenSource(<redacted>)"

    async def token(self) -> str | None:
        return self._token

    def invalidate(self) -> None:
        self.invalidations += 1


class AnonymousTokenSource:
    """No Authorization header at all (an emulator in non-strict mode)."""

    async def token(self) -> str | None:
        return None

    def invalidate(self) -> None:
        return None


class _UrllibResponse(google.auth.transport.Response):
    """A finished HTTP exchange in the shape google-auth expects."""

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self._status = status
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._data = data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class UrllibRequest(google.auth.transport.Request):
    """google-auth transport on the standard library, so tuningd needs no `requests` at runtime.

    It blocks, so it is only ever used inside a worker thread (asyncio.to_thread)."""

    def __init__(self, default_timeout_s: float = DEFAULT_TOKEN_HTTP_TIMEOUT_S) -> None:
        self._default_timeout_s = default_timeout_s

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _UrllibResponse:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            # urllib would also open file:// and friends; a credentials file must not make us.
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"unsupported URL scheme {scheme!r}"
            )
        if isinstance(body, str):
            body = body.encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url, data=body, headers=dict(headers or {}), method=method
        )
        timeout_s = timeout if timeout is not None else self._default_timeout_s
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                return _UrllibResponse(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            # Non-2xx answers are responses, not transport failures: google-auth reads the body.
            with exc:
                return _UrllibResponse(exc.code, dict(exc.headers or {}), exc.read())
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"token request to {_host_of(url)} failed: {type(exc).__name__}"
            ) from exc


class _AnswerRecorder(google.auth.transport.Request):
    """Passes requests on and remembers the last answer's status and host, never its body.

    google-auth puts a token endpoint's body into its RefreshError messages, and an endpoint
    may echo the signed assertion it was sent; what the recorder saw is reported instead."""

    def __init__(self, inner: google.auth.transport.Request) -> None:
        self._inner = inner
        self.status: int | None = None
        self.host = ""

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        response: google.auth.transport.Response = self._inner(
            url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)
        self.status = int(response.status)
        self.host = _host_of(url)
        return response


def _host_of(url: str) -> str:
    """Only the host of a URL, for messages (paths and queries may carry secrets)."""
    return urllib.parse.urlsplit(url).netloc or "?"


def refresh_margin_s(lifetime_s: float) -> float:
    """How long before expiry a token with this lifetime is refreshed."""
    return min(MAX_REFRESH_MARGIN_S, max(0.0, lifetime_s) * REFRESH_MARGIN_FRACTION)


class GoogleCredentialsSource:
    """google-auth credentials (key file or Application Default Credentials) as a TokenSource.

    Refreshes run in a worker thread, before expiry, single-flight: concurrent callers share one
    refresh. Credentials are loaded lazily (ADC may probe the metadata server) unless given."""

    def __init__(
        self,
        credentials: Any = None,
        *,
        credentials_file: str = "",
        scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,),
        request: google.auth.transport.Request | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials: Any = credentials
        self._credentials_file = credentials_file
        self._scopes = scopes
        self._request = request if request is not None else UrllibRequest()
        self._clock = clock
        # Monotonic deadline after which token() refreshes first; -inf = refresh now.
        self._refresh_at_s = -math.inf
        # Monotonic instant the current token expires (by our estimate).
        self._expires_at_s = -math.inf
        self._token: str | None = None
        self._inflight: asyncio.Future[None] | None = None
        # google-auth credentials are not thread safe; a refresh thread that outlives a
        # cancelled waiter must not overlap the next one.
        self._thread_lock = threading.Lock()
        self.project_id: str | None = None
        self.refresh_count = 0

    def __repr__(self) -> str:
        source = self._credentials_file or "application-default"
        return f"GoogleCredentialsSource({source!r})"

    @classmethod
    def from_file(cls, path: str, **kwargs: Any) -> GoogleCredentialsSource:
        """Load a service_account or authorized_user JSON key file now (bad files fail fast)."""
        credentials, project_id = _load_file(path, kwargs.get("scopes", (CLOUD_PLATFORM_SCOPE,)))
        source = cls(credentials, credentials_file=path, **kwargs)
        source.project_id = project_id
        return source

    @property
    def credentials(self) -> Any:
        """The google-auth credentials (None until loaded)."""
        return self._credentials

    async def token(self) -> str | None:
        if self._token is None or self._clock() >= self._refresh_at_s:
            try:
                await self._refresh()
            except RemoteError as exc:
                # An early refresh that fails (token endpoint blip) is no reason to fail the
                # call while the current token is still good; the next call tries again.
                if self._token is None or self._clock() >= self._expires_at_s:
                    raise
                _log.warning("token.early_refresh_failed",
                             extra={"reason": exc.message})
        return self._token

    def invalidate(self) -> None:
        if self._inflight is not None:
            # A refresh is already on its way; every 401 of a burst must not start another.
            return
        self._refresh_at_s = -math.inf
        self._expires_at_s = -math.inf

    async def _refresh(self) -> None:
        if self._inflight is None:
            future = asyncio.ensure_future(asyncio.to_thread(self._refresh_blocking))
            self._inflight = future
            future.add_done_callback(self._refresh_done)
        # shield: one waiter being cancelled must not cancel the refresh the others wait for.
        await asyncio.shield(self._inflight)

    def _refresh_done(self, future: asyncio.Future[None]) -> None:
        self._inflight = None
        if not future.cancelled():
            # Mark the exception retrieved even when every waiter went away.
            future.exception()

    def _refresh_blocking(self) -> None:
        recorder = _AnswerRecorder(self._request)
        with self._thread_lock:
            try:
                if self._credentials is None:
                    self._load_blocking(recorder)
                started_s = self._clock()
                self._credentials.refresh(recorder)
            except google.auth.exceptions.RefreshError as exc:
                retryable = bool(getattr(exc, "retryable", False))
                raise RemoteError(
                    f"token refresh rejected: {_refresh_reason(exc, recorder)}",
                    http_status=503 if retryable else 401,
                    status="UNAVAILABLE" if retryable else "UNAUTHENTICATED",
                    kind="transient" if retryable else "auth",
                ) from None
            except google.auth.exceptions.TransportError as exc:
                raise RemoteError(
                    f"token endpoint unreachable: {_refresh_reason(exc, recorder)}",
                    http_status=503, status="UNAVAILABLE", kind="transient",
                ) from None
            except google.auth.exceptions.DefaultCredentialsError as exc:
                raise RemoteError(
                    # google-auth's words about files and the environment, not an answer body.
                    f"no usable Google credentials: {_safe_reason(exc)}",
                    http_status=401, status="UNAUTHENTICATED", kind="auth",
                ) from None
            token = self._credentials.token
            if not token:
                raise RemoteError("token refresh returned no access token", http_status=401,
                                  status="UNAUTHENTICATED", kind="auth")
            expiry = self._credentials.expiry
            if expiry is None:
                lifetime_s = math.inf
            else:
                now_utc = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
                lifetime_s = (expiry - now_utc).total_seconds()
            # Measured from before the request, so the estimate errs early by its latency.
            self._token = str(token)
            self._expires_at_s = started_s + lifetime_s
            self._refresh_at_s = started_s + lifetime_s - refresh_margin_s(lifetime_s)
            self.refresh_count += 1
        _log.debug("token.refreshed", extra={"lifetime_s": round(lifetime_s, 1)})

    def _load_blocking(self, request: google.auth.transport.Request) -> None:
        if self._credentials_file:
            self._credentials, self.project_id = _load_file(self._credentials_file, self._scopes)
            return
        credentials, project_id = google.auth.default(scopes=list(self._scopes), request=request)
        self._credentials = credentials
        self.project_id = project_id


def _load_file(path: str, scopes: tuple[str, ...]) -> tuple[Any, str | None]:
    """Credentials and project id from a key file; a bad file is a ConfigError."""
    try:
        credentials, project_id = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            path, scopes=list(scopes)
        )
    except google.auth.exceptions.DefaultCredentialsError as exc:
        # The message names the file and the problem, never its contents.
        raise ConfigError(f"credentials_file {path!r}: {_safe_reason(exc)}") from None
    return credentials, project_id


def _safe_reason(exc: BaseException) -> str:
    """google-auth's own short description of a failure that involved no HTTP answer."""
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0][:300]
    return type(exc).__name__


def _refresh_reason(exc: BaseException, recorder: _AnswerRecorder) -> str:
    """Why a refresh failed: the answer's status and OAuth error code, never its body.

    Once an HTTP answer came back, google-auth's message is built from the body, which a token
    endpoint may fill with anything it was sent (the signed assertion, a refresh token)."""
    if recorder.status is None:
        return _safe_reason(exc)
    reason = f"HTTP {recorder.status} from {recorder.host}"
    code = _oauth_error_code(exc)
    if code:
        reason += f", error {code}"
    if 200 <= recorder.status < 300:
        reason += ", but no usable token in the answer"
    return reason


def _oauth_error_code(exc: BaseException) -> str:
    """The `error` field of the token endpoint's JSON answer when it looks like an OAuth code.

    Registered codes (RFC 6749 5.2: invalid_grant, invalid_client ...) are lowercase words
    joined by underscores; anything else may be an echo of what was sent and is dropped."""
    for arg in exc.args[1:]:
        if isinstance(arg, Mapping):
            code = arg.get("error")
            if isinstance(code, str) and _OAUTH_ERROR_CODE.fullmatch(code):
                return code
    return ""


def token_source_from_settings(credentials_file: str, *, anonymous: bool = False) -> TokenSource:
    """The token source the settings ask for: none, a key file, or Application Default Creds."""
    if anonymous:
        return AnonymousTokenSource()
    if credentials_file:
        return GoogleCredentialsSource.from_file(credentials_file)
    return GoogleCredentialsSource()
