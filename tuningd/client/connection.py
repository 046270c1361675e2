"""The client's side of the control API: where the daemon is, one call, its errors, and the
scope (project, location) and job references a command names."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuningd.adapters.secret_files import TokenFileError, read_token_file

DEFAULT_SERVER = "http://127.0.0.1:8470"
DEFAULT_LOCATION = "us-central1"
DEFAULT_TIMEOUT_S = 30.0
# The API's maximum page size: fewest round trips when following every page.
LIST_PAGE_SIZE = 100

# Exit codes scripts can rely on (wait's outcomes are in client.live).
EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3

# Where a command's project comes from when --project is not given, first found wins.
PROJECT_ENV = ("TUNINGD_PROJECT", "GOOGLE_CLOUD_PROJECT")
LOCATION_ENV = ("TUNINGD_LOCATION", "GOOGLE_CLOUD_LOCATION")

NAME_RE = re.compile(r"projects/[^/]+/locations/[^/]+/tuningJobs/[^/:]+")
_BARE_ID_RE = re.compile(r"[^/:\s]+")

_STATE_ALIASES: Mapping[str, str] = {
    "queued": "JOB_STATE_QUEUED",
    "submitting": "JOB_STATE_QUEUED",
    "pending": "JOB_STATE_PENDING",
    "running": "JOB_STATE_RUNNING",
    "cancelling": "JOB_STATE_CANCELLING",
    "succeeded": "JOB_STATE_SUCCEEDED",
    "failed": "JOB_STATE_FAILED",
    "cancelled": "JOB_STATE_CANCELLED",
}


class ClientError(Exception):
    """A command failure with the exit code it maps to."""

    exit_code = EXIT_SERVER_ERROR


class UsageError(ClientError):
    """Bad arguments, unreadable or invalid input files."""

    exit_code = EXIT_USAGE


class ConnectError(ClientError):
    """The server could not be reached."""

    exit_code = EXIT_CONNECT


class ServerError(ClientError):
    """The server answered with an error envelope."""

    exit_code = EXIT_SERVER_ERROR

    def __init__(self, http_status: int, status: str, message: str) -> None:
        super().__init__(f"{http_status} {status}: {message}")
        self.http_status = http_status
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Connection:
    """Where the daemon listens and how to authenticate to it."""

    base_url: str
    token: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def call(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
             body: Any = None) -> dict[str, Any]:
        """One API call; the decoded JSON object of a 2xx answer, else ServerError/ConnectError."""
        url = self.base_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            # The scheme was checked to be http(s) in connection_from_args.
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _server_error(exc.code, exc.read()) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError,
                http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectError(f"cannot connect to {self.base_url}: {reason}") from None
        try:
            value = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ServerError(200, "UNKNOWN", "the server answered with non-JSON data") from None
        if not isinstance(value, dict):
            raise ServerError(200, "UNKNOWN", "the server answered with a non-object JSON value")
        return value

    def list_all(self, path: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every TuningJob of a list route, all pages followed."""
        params = {**query, "pageSize": str(LIST_PAGE_SIZE)}
        jobs: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        while True:
            page = self.call("GET", path, query=params)
            jobs.extend(page.get("tuningJobs") or [])
            token = page.get("nextPageToken")
            # A token seen before would loop forever; stop rather than hang a script.
            if not token or token in seen_tokens:
                return jobs
            seen_tokens.add(token)
            params["pageToken"] = token


def _server_error(http_status: int, raw: bytes) -> ServerError:
    try:
        error = json.loads(raw)["error"]
        return ServerError(int(error.get("code", http_status)), str(error.get("status", "")),
                           str(error.get("message", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not Google's envelope (a proxy, say): show the start of whatever came back.
        text = raw.decode("utf-8", "replace").strip()[:200]
        return ServerError(http_status, "UNKNOWN", text or "no error message")


# --------------------------------------------------------------------------------------------
# Argument plumbing


def connection_from_args(args: argparse.Namespace,
                         environ: Mapping[str, str] | None = None) -> Connection:
    """--server / $TUNINGD_URL and --token-file / $TUNINGD_TOKEN_FILE into a Connection."""
    env = os.environ if environ is None else environ
    server = args.server or env.get("TUNINGD_URL") or DEFAULT_SERVER
    if urllib.parse.urlsplit(server).scheme not in ("http", "https"):
        raise UsageError(f"--server must be an http:// or https:// URL, got {server!r}")
    token_file = args.token_file or env.get("TUNINGD_TOKEN_FILE")
    token = None
    if token_file:
        try:
            token = read_token_file(token_file)
        except TokenFileError as exc:
            raise UsageError(f"token file: {exc.message}") from None
    return Connection(server, token, args.timeout)


def project_default(args: argparse.Namespace) -> str | None:
    """The project a command works in: --project, else $TUNINGD_PROJECT, else
    $GOOGLE_CLOUD_PROJECT; None when none is set (every command shares this one default)."""
    given: str | None = getattr(args, "project", None)
    return given or next((os.environ[n] for n in PROJECT_ENV if os.environ.get(n)), None)


def require_project(args: argparse.Namespace) -> str:
    """project_default, or a usage error naming the ways to set one."""
    project = project_default(args)
    if not project:
        raise UsageError("no project: pass --project or set " + " or ".join(
            f"${name}" for name in PROJECT_ENV))
    return project


def location_given(args: argparse.Namespace) -> str | None:
    """--location, else $TUNINGD_LOCATION, else $GOOGLE_CLOUD_LOCATION; None when unset."""
    given: str | None = getattr(args, "location", None)
    return given or next((os.environ[n] for n in LOCATION_ENV if os.environ.get(n)), None)


def location_default(args: argparse.Namespace) -> str:
    """location_given, else us-central1."""
    return location_given(args) or DEFAULT_LOCATION


def collection(project: str, location: str, version: str = "v1") -> str:
    """The Vertex-style path of a project's and location's jobs."""
    quote = urllib.parse.quote
    return (f"/{version}/projects/{quote(project, safe='')}/locations/"
            f"{quote(location, safe='')}/tuningJobs")


# tuningd's list of every project's and location's jobs.
EVERYWHERE = "/v1/tuningd/jobs"


def list_scope(args: argparse.Namespace) -> tuple[str, str | None]:
    """(list path, location the client filters on) of list and watch: one project's and
    location's collection, or tuningd's list of every place (--all-projects, or no project
    set anywhere), then only of an explicit --location (an environment's default location
    does not narrow a view of every place)."""
    project = project_default(args)
    if args.all_projects:
        if args.project:
            raise UsageError("--all-projects and --project exclude each other")
        project = None
    if project is None:
        location: str | None = args.location
        return EVERYWHERE, location
    return collection(project, location_default(args)), None


def list_filter(args: argparse.Namespace) -> str:
    """--filter and --state as one AIP-160 filter ("" for none)."""
    clauses = [f"({args.filter})"] if args.filter else []
    if getattr(args, "state", None):
        clauses.append(state_filter(args.state))
    return " AND ".join(clauses)


def job_path(ident: str) -> str:
    """API path of a job given as a full name (Vertex route, exact id) or a bare id or unique
    id prefix (tuningd's lookup route)."""
    if NAME_RE.fullmatch(ident):
        return "/v1/" + urllib.parse.quote(ident, safe="/")
    if _BARE_ID_RE.fullmatch(ident):
        return "/v1/tuningd/jobs/" + urllib.parse.quote(ident, safe="")
    raise UsageError(
        f"{ident!r} is neither a job id nor a name like projects/P/locations/L/tuningJobs/ID"
    )


def read_job_file(path: str) -> dict[str, Any]:
    """The TuningJob object of a JSON file (or stdin for "-"); UsageError if it is not one."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} must hold a JSON object (a Vertex TuningJob)")
    return value


def state_filter(state: str) -> str:
    """--state value (a local state or a JOB_STATE_* name) as a list filter clause."""
    name = _STATE_ALIASES.get(state.lower(), state.upper())
    if not name.startswith("JOB_STATE_"):
        name = "JOB_STATE_" + name
    if not re.fullmatch(r"JOB_STATE_[A-Z_]+", name):
        raise UsageError(f"unknown state {state!r}")
    return f"state={name}"
