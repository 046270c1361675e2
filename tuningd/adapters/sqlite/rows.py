"""Stored rows to values, defensively: a damaged row is named and refused, never a crash."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from tuningd.core.model import Job, JobEvent, LocalState, Outcome
from tuningd.ports import RowDamaged

# Every Job field is a column of the same name, in this order (checked at open).
JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Job))
FLOAT_COLUMNS = frozenset({
    "created_at", "updated_at", "cancel_sent_at", "next_action_at", "poll_interval_s",
    "submit_started_at", "submitted_at", "ended_at", "attempt_ended_at", "last_error_at",
})
_INT_COLUMNS = frozenset({"priority", "attempts", "retry_count", "error_code", "absent_checks",
                          "missing_checks", "cancel_requested", "last_error_code"})
_NULLABLE = frozenset({
    "request_id", "remote_name", "remote_state", "remote_substate", "remote_json",
    "cancel_sent_at", "submit_started_at", "submitted_at", "ended_at", "error_code",
    "error_message", "outcome", "remote_update_time", "attempt_ended_at", "api_version",
    "last_error_code", "last_error_message", "last_error_at",
})
_STATES = frozenset(s.value for s in LocalState)
_OUTCOMES = frozenset(o.value for o in Outcome)


class Undecodable(str):
    """A stored text that is not valid UTF-8 (read with U+FFFD in place of the bad bytes)."""

    __slots__ = ()


def decode_text(raw: bytes) -> str:
    """The connections' text_factory: a bad byte in one cell must not fail the whole query
    (sqlite3's own decoding does), so it becomes an Undecodable the row check refuses."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable(raw.decode("utf-8", "replace"))


def _kind_problem(column: str, value: Any) -> str | None:
    """Why `value` cannot be column `column` of a job row, or None if it can."""
    if value is None:
        return None if column in _NULLABLE else "is NULL"
    if isinstance(value, Undecodable):
        return "is not valid UTF-8"
    if column in FLOAT_COLUMNS:
        ok = isinstance(value, int | float)
    elif column in _INT_COLUMNS:
        ok = isinstance(value, int)
    else:
        ok = isinstance(value, str)
    return None if ok else f"has a {type(value).__name__} value"


def _json_object_problem(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return "is not valid JSON"
    return None if isinstance(value, dict) else "is not a JSON object"


def row_to_job(row: Sequence[Any]) -> Job:
    """The Job of a jobs row; raises RowDamaged naming the first column that is not sound."""
    values = dict(zip(JOB_COLUMNS, row, strict=True))
    key = str(values["id"])
    for column, value in values.items():
        problem = _kind_problem(column, value)
        if problem is None and column == "state" and value not in _STATES:
            problem = f"holds an unknown state {value!r:.40}"
        elif problem is None and column == "outcome" and value is not None \
                and value not in _OUTCOMES:
            problem = f"holds an unknown outcome {value!r:.40}"
        elif problem is None and column == "cancel_requested" and value not in (0, 1):
            problem = "is neither 0 nor 1"
        elif problem is None and column in ("spec_json", "remote_json") and value is not None:
            problem = _json_object_problem(value)
        if problem is not None:
            raise RowDamaged("jobs", key, column, problem)
    values["state"] = LocalState(values["state"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    if values["outcome"] is not None:
        values["outcome"] = Outcome(values["outcome"])
    return Job(**values)


def row_to_event(row: Sequence[Any]) -> JobEvent:
    """The JobEvent of a job_events row; raises RowDamaged if a column is not sound."""
    job_id, seq, at, from_state, to_state, reason, detail_text = row
    key = f"{job_id}"
    checks: tuple[tuple[str, bool], ...] = (
        ("seq", isinstance(seq, int)),
        ("at", isinstance(at, int | float)),
        ("from_state", from_state is None or (not isinstance(from_state, Undecodable)
                                              and from_state in _STATES)),
        ("to_state", not isinstance(to_state, Undecodable) and to_state in _STATES),
        ("reason", isinstance(reason, str) and not isinstance(reason, Undecodable)),
    )
    for column, ok in checks:
        if not ok:
            raise RowDamaged("job_events", f"{key} event {seq}", column, "is not sound")
    problem = ("is not valid UTF-8" if isinstance(detail_text, Undecodable)
               else "is not text" if not isinstance(detail_text, str)
               else _json_object_problem(detail_text))
    if problem is not None:
        raise RowDamaged("job_events", f"{key} event {seq}", "detail_json", problem)
    return JobEvent(
        job_id=job_id,
        seq=seq,
        at=at,
        from_state=None if from_state is None else LocalState(from_state),
        to_state=LocalState(to_state),
        reason=reason,
        detail=json.loads(detail_text),
    )
