"""The live commands: `watch` (a table redrawn in place on a terminal, one line per change
elsewhere) and `wait` (poll until jobs end; the exit code says how they ended)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from tuningd.client.connection import (
    EVERYWHERE,
    EXIT_OK,
    ConnectError,
    Connection,
    ServerError,
    connection_from_args,
    job_path,
    list_filter,
    list_scope,
)
from tuningd.client.jobs import (
    Row,
    is_terminal,
    job_id,
    local_state,
    parse_time,
    rows,
    short_ids,
    substate,
)
from tuningd.client.render import console, job_table

# wait's exit codes beyond the shared ones (0 ok, 1 server error, 2 usage, 3 cannot connect).
EXIT_FAILED = 4
EXIT_CANCELLED = 5
EXIT_TIMEOUT = 6
EXIT_INTERRUPTED = 130  # what a shell reports for SIGINT (128 + 2)

DEFAULT_INTERVAL_S = 1.0
# wait rides out a daemon restart or a network blip this long before giving up with its error.
OUTAGE_LIMIT_S = 60.0
# Jobs that ended while watching stay in the live table, the latest this many.
ENDED_SHOWN = 10
# The Vertex states of every job that has not ended, listed one by one: each is answered from
# the store's state index, where an OR of them would read the whole history.
ACTIVE_STATES = ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING",
                 "JOB_STATE_CANCELLING")

Job = dict[str, Any]


def state_label(job: Mapping[str, Any]) -> str:
    """`running/tuning`: the state, with Vertex's sub-state when there is one."""
    sub = substate(job)
    return f"{local_state(job)}/{sub}" if sub else local_state(job)


@dataclass(frozen=True)
class Change:
    """A job seen for the first time (old None) or seen in a new state, sub-state or reason."""

    old: Job | None
    new: Job


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def change_line(change: Change, short_id: str, row: Row) -> str:
    """One plain line of a change: time, short id, (old ->) new state, name, reason."""
    new = state_label(change.new)
    text = new if change.old is None else f"{state_label(change.old)} -> {new}"
    parts = [utc_now(), short_id, text]
    if row.name:
        parts.append(row.name)
    if row.reason:
        parts.append(f"reason: {row.reason}")
    return "  ".join(parts)


class Tracker:
    """What a watch or a wait has seen of each job, and what changed since."""

    def __init__(self) -> None:
        self.known: dict[str, Job] = {}
        self.ended: list[str] = []  # ids that ended while tracked, in the order they did

    def merge(self, current: Mapping[str, Job]) -> list[Change]:
        changes = []
        for ident, job in current.items():
            old = self.known.get(ident)
            if old is None or _progress(old) != _progress(job):
                changes.append(Change(old, job))
            if is_terminal(job) and (old is None or not is_terminal(old)):
                self.ended.append(ident)
            self.known[ident] = job
        return changes

    def drop(self, ident: str) -> None:
        self.known.pop(ident, None)

    def forget_ended(self, keep: int) -> None:
        """Forget all but the `keep` jobs that ended last (a watch of days stays small)."""
        cut = max(0, len(self.ended) - keep)
        for ident in self.ended[:cut]:
            self.known.pop(ident, None)
        del self.ended[:cut]

    def lines(self, changes: Sequence[Change], now: float) -> list[str]:
        shorts = short_ids(self.known)
        return [change_line(c, shorts[job_id(c.new)], rows([c.new], now)[0]) for c in changes]


def _progress(job: Mapping[str, Any]) -> tuple[str, str, Any]:
    ext = job.get("tuningd") or {}
    last = ext.get("lastError") or {}
    return local_state(job), substate(job), (last.get("status"), last.get("message"))


# --------------------------------------------------------------------------------------------
# Polling


@dataclass(frozen=True)
class Scope:
    """What to poll: given job ids, or every active job of a list route (in one location)."""

    path: str = EVERYWHERE
    location: str | None = None
    filter_text: str = ""
    ids: tuple[str, ...] = ()


def active_jobs(conn: Connection, scope: Scope) -> list[Job]:
    """Every job of the scope that has not ended (one listing per active Vertex state)."""
    jobs: list[Job] = []
    for state in ACTIVE_STATES:
        clause = f"state={state}"
        if scope.filter_text:
            clause = f"({scope.filter_text}) AND {clause}"
        jobs += conn.list_all(scope.path, {"filter": clause})
    if scope.location is not None:
        jobs = [j for j in jobs if str(j.get("name", "")).split("/")[3:4] == [scope.location]]
    return jobs


def poll(conn: Connection, scope: Scope, tracker: Tracker) -> list[Change]:
    """One look: the scope's jobs now, plus a look at each tracked job that left the listing
    (it ended, or was filtered away); the changes since the last look."""
    if scope.ids:
        current = {i: conn.call("GET", job_path(i)) for i in scope.ids}
    else:
        current = {job_id(j): j for j in active_jobs(conn, scope)}
        for ident, old in list(tracker.known.items()):
            if ident in current or is_terminal(old):
                continue
            try:
                current[ident] = conn.call("GET", job_path(ident))
            except ServerError as exc:
                if exc.http_status != 404:
                    raise
                tracker.drop(ident)  # pruned since: nothing more to say of it
    changes = tracker.merge(current)
    if not scope.ids:
        tracker.forget_ended(ENDED_SHOWN)
    return changes


def _transient(exc: Exception) -> bool:
    return isinstance(exc, ConnectError) or (isinstance(exc, ServerError)
                                             and exc.http_status >= 500)


# --------------------------------------------------------------------------------------------
# watch


def watch_view(tracker: Tracker, scope: Scope, now: float, note: str = "") -> RenderableType:
    """The live table: started jobs (oldest first), the queue in order, then the latest ended."""
    known = tracker.known
    if scope.ids:
        jobs = [known[i] for i in scope.ids if i in known]
    else:
        alive = [j for j in known.values() if not is_terminal(j)]
        started = sorted((j for j in alive if local_state(j) != "queued"),
                         key=lambda j: parse_time(j.get("createTime")) or 0.0)
        queued = sorted((j for j in alive if local_state(j) == "queued"),
                        key=lambda j: (j.get("tuningd") or {}).get("queuePosition") or 1 << 30)
        ended = [known[i] for i in reversed(tracker.ended) if i in known][:ENDED_SHOWN]
        jobs = started + queued + ended
    counts: dict[str, int] = {}
    for job in jobs:
        counts[local_state(job)] = counts.get(local_state(job), 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no active jobs"
    title = f"tuningd watch  {utc_now()}  {summary}  (Ctrl-C to quit)"
    table = job_table(rows(jobs, now), with_place=scope.path == EVERYWHERE, title=title)
    return Group(table, Text(note, style="yellow")) if note else table


def watch(conn: Connection, scope: Scope, interval_s: float) -> int:
    """Run watch until Ctrl-C (exit 0), or until every watched id has ended."""
    try:
        tracker = Tracker()
        changes = poll(conn, scope, tracker)  # errors of the first look are the command's
        out = console()
        if out.is_terminal:
            with Live(watch_view(tracker, scope, time.time()), console=out,
                      auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as view:
                _loop(conn, scope, tracker, interval_s,
                      lambda _changes, note: view.update(
                          watch_view(tracker, scope, time.time(), note), refresh=True))
        else:
            plain = _Plain(tracker)
            plain(changes, "")
            _loop(conn, scope, tracker, interval_s, plain)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


class _Plain:
    """Lines of change on stdout; a connection problem once on stderr (not at every look)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.note = ""

    def __call__(self, changes: Sequence[Change], note: str) -> None:
        for line in self.tracker.lines(changes, time.time()):
            print(line, flush=True)
        if note and note != self.note:
            print(f"tuningd: {note}", file=sys.stderr, flush=True)
        self.note = note


def _loop(conn: Connection, scope: Scope, tracker: Tracker, interval_s: float,
          shown: Callable[[Sequence[Change], str], None]) -> None:
    """Look every interval and show what was seen (a problem reaching the daemon too) until
    the ids watched have all ended (never when no id was named)."""
    while not (scope.ids and all(is_terminal(tracker.known[i]) for i in scope.ids)):
        time.sleep(interval_s)
        try:
            changes, note = poll(conn, scope, tracker), ""
        except (ConnectError, ServerError) as exc:
            if not _transient(exc):
                raise
            changes, note = [], f"{exc}; still trying every {interval_s:g}s"
        shown(changes, note)


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow jobs live until Ctrl-C (or until the jobs named have all ended)."""
    conn = connection_from_args(args)
    path, location = list_scope(args)
    try:
        ids = tuple(job_id(conn.call("GET", job_path(i))) for i in args.jobs)
    except KeyboardInterrupt:
        return EXIT_OK
    return watch(conn, Scope(path, location, list_filter(args), ids), args.interval)


# --------------------------------------------------------------------------------------------
# wait


def outcome(jobs: Sequence[Mapping[str, Any]]) -> int:
    """0 when every job succeeded, else EXIT_FAILED if any failed, else EXIT_CANCELLED."""
    states = {local_state(j) for j in jobs}
    if "failed" in states:
        return EXIT_FAILED
    if "cancelled" in states:
        return EXIT_CANCELLED
    return EXIT_OK


def wait_for(conn: Connection, jobs: Sequence[Job], *, interval_s: float,
             max_wait_s: float | None, quiet: bool, announce: bool = False) -> int:
    """Poll `jobs` (views already fetched) until each has ended; print each change unless
    quiet (their first state too if `announce`); the outcome's exit code."""
    deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
    scope = Scope(ids=tuple(dict.fromkeys(job_id(j) for j in jobs)))
    tracker = Tracker()
    first = tracker.merge({job_id(j): j for j in jobs})
    plain = _Plain(tracker)
    if announce and not quiet:
        plain(first, "")
    failing_since: float | None = None
    try:
        while not all(is_terminal(tracker.known[i]) for i in scope.ids):
            if deadline is not None and time.monotonic() >= deadline:
                if not quiet:
                    print(f"tuningd: still not ended after {max_wait_s:g}s", file=sys.stderr)
                return EXIT_TIMEOUT
            pause = interval_s if deadline is None else min(
                interval_s, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            try:
                changes = poll(conn, scope, tracker)
                failing_since = None
            except (ConnectError, ServerError) as exc:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if not _transient(exc) or now - failing_since >= OUTAGE_LIMIT_S:
                    raise
                continue
            if not quiet:
                plain(changes, "")
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return outcome([tracker.known[i] for i in scope.ids])


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait until every job named has ended; the exit code says how they ended."""
    conn = connection_from_args(args)
    try:
        jobs = [conn.call("GET", job_path(i)) for i in args.jobs]
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return wait_for(conn, jobs, interval_s=args.interval, max_wait_s=args.max_wait,
                    quiet=args.quiet, announce=True)
