"""`tuningd status`: the daemon at a glance from GET /v1/tuningd/status (queue, limits, paused
creates, last good poll)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from tuningd.client.jobs import duration, parse_time, short_time
from tuningd.client.render import grid

STATUS_PATH = "/v1/tuningd/status"
# The order states are counted in: the lifecycle's.
STATE_ORDER = ("queued", "submitting", "pending", "running", "cancelling", "succeeded", "failed",
               "cancelled")
_ROLES = {"single": "single instance", "leader": "leader (runs the queue)",
          "standby": "standby (another instance runs the queue)"}


def _ago(timestamp: Any, now: float) -> str:
    at = parse_time(timestamp)
    if at is None:
        return "never"
    delta = now - at
    when = f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"
    return f"{short_time(timestamp)} ({when})"


def _counts(counts: Mapping[str, Any]) -> str:
    order = [s for s in STATE_ORDER if s in counts] + sorted(set(counts) - set(STATE_ORDER))
    return "  ".join(f"{state} {counts[state]}" for state in order) or "-"


def _labelled(pairs: Sequence[tuple[str, str]]) -> Text:
    width = max(len(label) for label, _ in pairs) + 2
    return Text("\n".join(f"{label.ljust(width)}{value}" for label, value in pairs))


def status_view(status: Mapping[str, Any], now: float | None = None) -> RenderableType:
    """The status document as labelled lines and two tables (limits, paused creates)."""
    now = time.time() if now is None else now
    queue: Mapping[str, Any] = status.get("queue") or {}
    role = str(status.get("role", ""))
    depth = queue.get("depth", 0)
    oldest = queue.get("oldestQueuedTime")
    queue_text = f"{depth} job{'s' if depth != 1 else ''} queued"
    if oldest:
        queue_text += f", oldest since {_ago(oldest, now)}"
    parts: list[RenderableType] = [_labelled([
        ("tuningd", f"{status.get('version', '?')}, {_ROLES.get(role, role or '?')}"),
        ("jobs", _counts(status.get("counts") or {})),
        ("queue", queue_text),
        ("last good poll", _ago(status.get("lastSuccessfulPollTime"), now)),
    ])]
    limits: Sequence[Mapping[str, Any]] = status.get("limits") or []
    if limits:
        rows = [[str(lim.get("scope", "")), str(lim.get("active", "")),
                 str(lim.get("limit", "")),
                 "full" if _full(lim) else ""] for lim in limits]
        parts += [Text(""), grid(("LIMIT", "ACTIVE", "OF", ""), rows)]
    paused: Sequence[Mapping[str, Any]] = status.get("pausedCreates") or []
    if paused:
        rows = [[f"projects/{p.get('project', '')}/locations/{p.get('location', '')}",
                 str(p.get("status", "")), short_time(p.get("since")),
                 _ago(p.get("nextProbeTime"), now), str(p.get("message", ""))]
                for p in paused]
        parts += [Text(""), grid(("CREATES PAUSED FOR", "STATUS", "SINCE", "NEXT PROBE",
                                  "MESSAGE"), rows)]
    else:
        parts += [Text(""), Text("creates: not paused anywhere")]
    return Group(*parts)


def _full(limit: Mapping[str, Any]) -> bool:
    active, cap = limit.get("active"), limit.get("limit")
    return isinstance(active, int) and isinstance(cap, int) and active >= cap
