"""What the client shows of a TuningJob view: its id, states, times, reason, as plain values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Short ids are at least this long (a UUID's first group), longer where the view needs it.
SHORT_ID_CHARS = 8
REASON_WIDTH = 48
DISPLAY_NAME_WIDTH = 40
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
_SUBSTATE_PREFIX = "TUNING_JOB_STATE_"
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def job_id(job: Mapping[str, Any]) -> str:
    """The job's local id: the last segment of its name."""
    return str(job.get("name", "")).rsplit("/", 1)[-1] or "-"


def place(job: Mapping[str, Any]) -> str:
    """`project/location` of a job's name."""
    parts = str(job.get("name", "")).split("/")
    return f"{parts[1]}/{parts[3]}" if len(parts) >= 6 else "-"


def local_state(job: Mapping[str, Any]) -> str:
    """tuningd's own state (queued, submitting, ...), else the Vertex one in lower case."""
    ext = job.get("tuningd") or {}
    if "state" in ext:
        return str(ext["state"])
    return str(job.get("state", "-")).removeprefix("JOB_STATE_").lower()


def substate(job: Mapping[str, Any]) -> str:
    """Vertex's tuning sub-state in short (`tuning`, `waiting-for-quota`), or ""."""
    raw = str((job.get("tuningd") or {}).get("remoteSubstate") or "")
    if not raw or raw == "TUNING_JOB_STATE_UNSPECIFIED":
        return ""
    return raw.removeprefix(_SUBSTATE_PREFIX).lower().replace("_", "-")


def is_terminal(job: Mapping[str, Any]) -> bool:
    return local_state(job) in TERMINAL_STATES


def parse_time(text: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (nanoseconds cut to micro), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text, count=1)).timestamp()
    except ValueError:
        return None


def short_time(timestamp: Any) -> str:
    """A timestamp to the second (--json keeps the full precision)."""
    if not timestamp:
        return "-"
    return re.sub(r"\.\d+Z$", "Z", str(timestamp))


def duration(seconds: float) -> str:
    """A duration in its two largest units: 45s, 3m07s, 2h05m, 3d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age_or_run_time(job: Mapping[str, Any], now: float) -> str:
    """How long a queued job has waited, or how long a started one has run (ended: in all)."""
    created = parse_time(job.get("createTime"))
    started = parse_time(job.get("startTime"))
    ended = parse_time(job.get("endTime"))
    waiting = local_state(job) in ("queued", "submitting")
    since = created if waiting or started is None else started
    if since is None:
        return "-"
    until = ended if ended is not None and is_terminal(job) else now
    return duration(until - since)


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line
    return text if len(text) <= width else text[: width - 1] + "…"


def reason(job: Mapping[str, Any], width: int = REASON_WIDTH) -> str:
    """Why the job is where it is, in short: its last error, else why its creates are paused,
    else (failed) its error; "" when there is nothing to say."""
    ext: Mapping[str, Any] = job.get("tuningd") or {}
    last = ext.get("lastError")
    if isinstance(last, Mapping):
        return clip(f"{last.get('status') or last.get('code', '')}: {last.get('message', '')}",
                    width)
    paused = ext.get("createsPaused")
    if isinstance(paused, Mapping):
        return clip(f"creates paused: {paused.get('status', '')}: {paused.get('message', '')}",
                    width)
    error = job.get("error")
    if local_state(job) == "failed" and isinstance(error, Mapping):
        return clip(str(error.get("message") or f"code {error.get('code')}"), width)
    return ""


def short_ids(ids: Iterable[str], minimum: int = SHORT_ID_CHARS) -> dict[str, str]:
    """Each id cut to the shortest length (at least `minimum`) that tells them all apart."""
    unique = sorted(set(ids))
    length = minimum
    longest = max((len(i) for i in unique), default=0)
    while length < longest and len({i[:length] for i in unique}) < len(unique):
        length += 1
    return {i: i[:length] for i in unique}


@dataclass(frozen=True)
class Row:
    """One job as a table row or a line of change."""

    id: str
    short_id: str
    state: str
    substate: str
    priority: str
    position: str
    age: str
    name: str
    reason: str
    place: str

    @property
    def progress(self) -> tuple[str, str, str]:
        """What a plain line of change reports a change of."""
        return self.state, self.substate, self.reason


def rows(jobs: Sequence[Mapping[str, Any]], now: float) -> list[Row]:
    """The rows of a view of jobs, with ids as short as the view allows."""
    shorts = short_ids(job_id(j) for j in jobs)
    out = []
    for job in jobs:
        ext: Mapping[str, Any] = job.get("tuningd") or {}
        ident = job_id(job)
        position = ext.get("queuePosition")
        out.append(Row(
            id=ident, short_id=shorts[ident], state=local_state(job), substate=substate(job),
            priority=str(ext.get("priority", 0)),
            position=str(position) if position is not None else "",
            age=age_or_run_time(job, now),
            name=clip(str(job.get("tunedModelDisplayName") or ""), DISPLAY_NAME_WIDTH),
            reason=reason(job), place=place(job)))
    return out
