"""tuningd CLI client commands (submit, list, show, cancel) over the control API; stdlib only."""

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuningd.adapters.secret_files import TokenFileError, read_token_file

DEFAULT_SERVER = "http://127.0.0.1:8470"
DEFAULT_LOCATION = "us-central1"
DEFAULT_TIMEOUT_S = 30.0
# The API's maximum page size: fewest round trips when following every page.
LIST_PAGE_SIZE = 100

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3

_NAME_RE = re.compile(r"projects/[^/]+/locations/[^/]+/tuningJobs/[^/:]+")
_BARE_ID_RE = re.compile(r"[^/:\s]+")
_DISPLAY_NAME_WIDTH = 40

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


def _project(args: argparse.Namespace) -> str:
    project: str | None = args.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise UsageError("no project: pass --project or set GOOGLE_CLOUD_PROJECT")
    return project


def _location(args: argparse.Namespace) -> str:
    location: str = args.location or os.environ.get("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION
    return location


def _collection(project: str, location: str) -> str:
    quote = urllib.parse.quote
    return f"/v1/projects/{quote(project, safe='')}/locations/{quote(location, safe='')}/tuningJobs"


def job_path(ident: str) -> str:
    """API path of a job given as a full name (Vertex route) or a bare id (tuningd lookup)."""
    if _NAME_RE.fullmatch(ident):
        return "/v1/" + urllib.parse.quote(ident, safe="/")
    if _BARE_ID_RE.fullmatch(ident):
        return "/v1/tuningd/jobs/" + urllib.parse.quote(ident, safe="")
    raise UsageError(
        f"{ident!r} is neither a job id nor a name like projects/P/locations/L/tuningJobs/ID"
    )


def _read_job_file(path: str) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------
# Output


def _short_time(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    # Whole seconds are enough for people; --json keeps the full precision.
    return re.sub(r"\.\d+Z$", "Z", timestamp)


def _job_id(job: Mapping[str, Any]) -> str:
    return str(job.get("name", "")).rsplit("/", 1)[-1] or "-"


def _local_state(job: Mapping[str, Any]) -> str:
    ext = job.get("tuningd") or {}
    if "state" in ext:
        return str(ext["state"])
    return str(job.get("state", "-")).removeprefix("JOB_STATE_").lower()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [headers, *rows]]
    return "\n".join(lines)


JOB_COLUMNS: tuple[str, ...] = ("ID", "STATE", "DISPLAY NAME", "BASE MODEL", "CREATED", "REMOTE")


def job_row(job: Mapping[str, Any]) -> list[str]:
    """The table cells of one job, in JOB_COLUMNS order."""
    ext = job.get("tuningd") or {}
    base = job.get("baseModel") or (job.get("preTunedModel") or {}).get("tunedModelName") or "-"
    return [
        _job_id(job),
        _local_state(job),
        _clip(str(job.get("tunedModelDisplayName") or "-"), _DISPLAY_NAME_WIDTH),
        str(base),
        _short_time(job.get("createTime")),
        str(ext.get("remoteState") or "-"),
    ]


_OTHER_SPECS = frozenset({"preferenceOptimizationSpec", "distillationSpec"})


def format_job_details(job: Mapping[str, Any]) -> str:
    """A readable multi-line description of one job, with its history when present."""
    ext: Mapping[str, Any] = job.get("tuningd") or {}
    # Whichever tuning spec the job sets (supervised, preference, distillation...): the CLI stays
    # stdlib-only, so it goes by Vertex's naming rather than importing the codec's list.
    kind = next((key for key in job if key.endswith("TuningSpec") or key in _OTHER_SPECS), None)
    spec: Mapping[str, Any] = job.get(kind) or {} if kind else {}
    tuned: Mapping[str, Any] = job.get("tunedModel") or {}
    error: Mapping[str, Any] = job.get("error") or {}
    position = ext.get("queuePosition")
    fields: list[tuple[str, Any]] = [
        ("name", job.get("name")),
        ("state", f"{_local_state(job)} ({job.get('state', '-')})"),
        ("display name", job.get("tunedModelDisplayName")),
        ("description", job.get("description")),
        ("base model", job.get("baseModel")),
        ("custom base model", job.get("customBaseModel")),
        ("pre-tuned model", (job.get("preTunedModel") or {}).get("tunedModelName")),
        ("tuning kind", kind.removesuffix("Spec") if kind else None),
        ("training data", spec.get("trainingDatasetUri") or spec.get("promptDatasetUri")),
        ("validation data", spec.get("validationDatasetUri")),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted((job.get("labels") or {}).items()))),
        ("priority", ext.get("priority")),
        ("queue position", position),
        ("attempts", ext.get("attempts")),
        ("request id", ext.get("requestId")),
        ("cancel requested", "yes" if ext.get("cancelRequested") else None),
        ("outcome", ext.get("outcome")),
        ("remote name", ext.get("remoteName")),
        ("remote state", " / ".join(
            str(s) for s in (ext.get("remoteState"), ext.get("remoteSubstate")) if s)),
        ("created", job.get("createTime")),
        ("updated", job.get("updateTime")),
        ("started", job.get("startTime")),
        ("ended", job.get("endTime")),
        ("tuned model", tuned.get("model")),
        ("endpoint", tuned.get("endpoint")),
        ("error", f"code {error.get('code', 0)}: {error.get('message', '')}" if error else None),
    ]
    shown = [(label, str(value)) for label, value in fields if value not in (None, "")]
    width = max(len(label) for label, _ in shown) + 1
    lines = [f"{(label + ':').ljust(width)}  {value}" for label, value in shown]
    history = ext.get("history")
    if history:
        rows = [[_short_time(h.get("time")), str(h.get("from") or "-"), str(h.get("to", "-")),
                 str(h.get("reason", ""))] for h in history]
        lines += ["", "HISTORY", format_table(rows, ("TIME", "FROM", "TO", "REASON"))]
    return "\n".join(lines)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------------------------
# Commands


def cmd_submit(args: argparse.Namespace) -> int:
    """POST a TuningJob file; prints the queued job."""
    project, location = _project(args), _location(args)
    body = _read_job_file(args.file)
    query: dict[str, str] = {}
    if args.priority is not None:
        query["priority"] = str(args.priority)
    if args.request_id is not None:
        query["requestId"] = args.request_id
    job = connection_from_args(args).call("POST", _collection(project, location),
                                          query=query, body=body)
    if args.json:
        _print_json(job)
    else:
        print(format_table([job_row(job)], JOB_COLUMNS))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """List the jobs of a project/location, following every page."""
    project, location = _project(args), _location(args)
    clauses = [f"({args.filter})"] if args.filter else []
    if args.state:
        clauses.append(state_filter(args.state))
    query = {"pageSize": str(LIST_PAGE_SIZE)}
    if clauses:
        query["filter"] = " AND ".join(clauses)
    conn = connection_from_args(args)
    jobs: list[dict[str, Any]] = []
    seen_tokens: set[str] = set()
    while True:
        page = conn.call("GET", _collection(project, location), query=query)
        jobs.extend(page.get("tuningJobs") or [])
        token = page.get("nextPageToken")
        # A token seen before would loop forever; stop rather than hang a script.
        if not token or token in seen_tokens:
            break
        seen_tokens.add(token)
        query["pageToken"] = token
    if args.json:
        _print_json(jobs)
    elif jobs:
        print(format_table([job_row(job) for job in jobs], JOB_COLUMNS))
    else:
        print("No tuning jobs.")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Show one job with its history."""
    path = job_path(args.job)
    job = connection_from_args(args).call("GET", path)
    if args.json:
        _print_json(job)
    else:
        print(format_job_details(job))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel one job (a bare id is resolved to its name first)."""
    path = job_path(args.job)
    conn = connection_from_args(args)
    name = args.job
    if not _NAME_RE.fullmatch(args.job):
        # The Vertex cancel route needs project and location; the lookup route knows them.
        name = str(conn.call("GET", path)["name"])
        path = job_path(name)
    conn.call("POST", path + ":cancel", body={})
    print(f"Cancellation requested for {name}.")
    return EXIT_OK


def _run(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ServerError as exc:
            print(f"tuningd: error: {exc.http_status} {exc.status}: {exc.message}",
                  file=sys.stderr)
            return exc.exit_code
        except ClientError as exc:
            print(f"tuningd: error: {exc}", file=sys.stderr)
            return exc.exit_code

    run.__doc__ = command.__doc__
    return run


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--server", metavar="URL",
                       help=f"control API URL (default: $TUNINGD_URL, else {DEFAULT_SERVER})")
    group.add_argument("--token-file", metavar="FILE",
                       help="file holding the API bearer token (default: $TUNINGD_TOKEN_FILE)")
    group.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT_S:g})")
    return common


def _scope_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="Google Cloud project (default: $GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--location", help="region (default: $GOOGLE_CLOUD_LOCATION, else "
                                           f"{DEFAULT_LOCATION})")


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register submit, list, show and cancel; each sets `func(args) -> exit code`.

    Exit codes: 0 ok, 1 the server answered with an error, 2 usage error or bad input file,
    3 cannot connect.
    """
    common = _common_options()

    p = subparsers.add_parser("submit", parents=[common], help="queue a tuning job",
                              description="Queue a Vertex TuningJob (JSON, either dialect).")
    p.add_argument("file", metavar="FILE", help="TuningJob JSON file, or - for stdin")
    _scope_options(p)
    p.add_argument("--priority", type=int, help="higher is submitted first (default 0)")
    p.add_argument("--request-id", metavar="ID",
                   help="idempotency key (1-64 of A-Z a-z 0-9 _ -; a UUID fits)")
    p.add_argument("--json", action="store_true", help="print the TuningJob JSON")
    p.set_defaults(func=_run(cmd_submit))

    p = subparsers.add_parser("list", parents=[common], help="list tuning jobs",
                              description="List tuning jobs, newest first (all pages).")
    _scope_options(p)
    p.add_argument("--state", help="only jobs in this state (queued, running, succeeded, ... "
                                   "or a JOB_STATE_* name)")
    p.add_argument("--filter", help="AIP-160 list filter, e.g. 'labels.team=nlp'")
    p.add_argument("--json", action="store_true", help="print a JSON array of TuningJobs")
    p.set_defaults(func=_run(cmd_list))

    p = subparsers.add_parser("show", parents=[common], help="show one job and its history")
    p.add_argument("job", metavar="ID", help="job id or projects/P/locations/L/tuningJobs/ID")
    p.add_argument("--json", action="store_true", help="print the TuningJob JSON")
    p.set_defaults(func=_run(cmd_show))

    p = subparsers.add_parser("cancel", parents=[common], help="cancel a job")
    p.add_argument("job", metavar="ID", help="job id or projects/P/locations/L/tuningJobs/ID")
    p.set_defaults(func=_run(cmd_cancel))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tuningd.client COMMAND ...`: the client commands without the daemon's."""
    parser = argparse.ArgumentParser(prog="tuningd", description="tuningd client commands")
    add_client_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
