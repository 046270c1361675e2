"""Fault-injection settings (errors, latency, drops, lost or late creates, lagging lists, garbled
replies, targeted error rules) and their seeded dice."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tuningd.core.errors import (
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    TuningdError,
    Unavailable,
)

METHODS: tuple[str, ...] = ("create", "get", "list", "cancel")
FAULT_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
ANY = "*"
RULE_STATUSES: frozenset[int] = frozenset({400, 401, 403, 404, 409, 429, 500, 502, 503, 504})
# Status names a rule may answer with; the first is the default for that HTTP status.
RULE_STATUS_NAMES: Mapping[int, tuple[str, ...]] = {
    400: ("INVALID_ARGUMENT", "FAILED_PRECONDITION"),
    401: ("UNAUTHENTICATED",),
    403: ("PERMISSION_DENIED",),
    404: ("NOT_FOUND",),
    409: ("ABORTED", "ALREADY_EXISTS"),
    429: ("RESOURCE_EXHAUSTED",),
    500: ("INTERNAL",),
    502: ("UNAVAILABLE",),
    503: ("UNAVAILABLE",),
    504: ("DEADLINE_EXCEEDED",),
}
# google.rpc.ErrorInfo reasons a rule may carry (Google sends ErrorInfo with 401 and 403); the
# first is the default. Each has its own Google message (see google_errors.py).
RULE_REASONS: Mapping[int, tuple[str, ...]] = {
    401: ("ACCESS_TOKEN_EXPIRED", "ACCESS_TOKEN_TYPE_UNSUPPORTED", "CREDENTIALS_MISSING"),
    403: ("IAM_PERMISSION_DENIED", "SERVICE_DISABLED", "BILLING_DISABLED", "CONSUMER_INVALID"),
}
_RULE_KEYS = ("status", "method", "project", "location", "rate", "status_name", "reason")
_PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")
_LOCATION_RE = re.compile(r"[a-z][a-z0-9-]*")


class LostReplyMode(StrEnum):
    """How a create whose job was really created loses its reply."""

    DROP = "drop"  # close the connection without a response
    UNAVAILABLE = "503"  # answer 503 UNAVAILABLE


class FaultAction(StrEnum):
    """What the fault dice decided for one request, checked in this order."""

    NONE = "none"
    DROP = "drop"
    ERROR = "error"
    MALFORMED = "malformed"  # 200 with an HTML body
    TRUNCATED = "truncated"  # 200 with the first half of the real JSON body


@dataclass(frozen=True)
class ErrorRule:
    """Answer matching calls with a Google error instead of running them (nothing changes).

    method is create/get/list/cancel or "*"; project is matched exactly against the project
    segment of the request path (an id or a number) or "*"; location likewise."""

    status: int
    method: str = ANY
    project: str = ANY
    location: str = ANY
    rate: float = 1.0
    status_name: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (isinstance(self.status, bool) or not isinstance(self.status, int)
                or self.status not in RULE_STATUSES):
            raise ValueError(f"status must be one of {sorted(RULE_STATUSES)}")
        if self.method != ANY and self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join((*METHODS, ANY))}")
        if self.project != ANY and not _fullmatch(_PROJECT_RE, self.project):
            raise ValueError("project must be '*' or a project id or number")
        if self.location != ANY and not _fullmatch(_LOCATION_RE, self.location):
            raise ValueError("location must be '*' or a location such as us-central1")
        _probability(self.rate, "rate")
        names = RULE_STATUS_NAMES[self.status]
        if self.status_name is not None and self.status_name not in names:
            raise ValueError(f"status_name for {self.status} must be one of {', '.join(names)}")
        reasons = RULE_REASONS.get(self.status, ())
        if self.reason is not None and not reasons:
            raise ValueError("reason is only allowed with status 401 or 403")
        if self.reason is not None and self.reason not in reasons:
            raise ValueError(f"reason for {self.status} must be one of {', '.join(reasons)}")

    @property
    def effective_status_name(self) -> str:
        return self.status_name or RULE_STATUS_NAMES[self.status][0]

    @property
    def effective_reason(self) -> str | None:
        reasons = RULE_REASONS.get(self.status)
        return self.reason or (reasons[0] if reasons else None)

    def matches(self, method: str, project: str, location: str) -> bool:
        return (method in METHODS
                and self.method in (ANY, method)
                and self.project in (ANY, project)
                and self.location in (ANY, location))

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "method": self.method, "project": self.project,
                "location": self.location, "rate": self.rate,
                "status_name": self.status_name, "reason": self.reason}

    @classmethod
    def from_json(cls, body: Any) -> ErrorRule:
        """From a JSON object with the field names; only status is required."""
        if not isinstance(body, dict):
            raise ValueError("must be a JSON object")
        unknown = sorted(set(body) - set(_RULE_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}")
        if "status" not in body:
            raise ValueError("status is required")
        for key in ("method", "project", "location"):
            if not isinstance(body.get(key, ANY), str):
                raise ValueError(f"{key} must be a string")
        for key in ("status_name", "reason"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise ValueError(f"{key} must be a string or null")
        return cls(status=body["status"], method=body.get("method", ANY),
                   project=body.get("project", ANY), location=body.get("location", ANY),
                   rate=_probability(body.get("rate", 1.0), "rate"),
                   status_name=body.get("status_name"), reason=body.get("reason"))

    @classmethod
    def parse(cls, text: str) -> ErrorRule:
        """The command-line form METHOD:PROJECT[/LOCATION]:STATUS[:RATE[:REASON_OR_STATUS_NAME]]
        (e.g. `create:my-proj:403`, `*:*/europe-west4:503:0.5`, `get:*:403:1:SERVICE_DISABLED`),
        or a JSON object with the field names."""
        if text.lstrip().startswith("{"):
            try:
                return cls.from_json(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg})") from None
        parts = text.split(":")
        if not 3 <= len(parts) <= 5:
            raise ValueError("expected METHOD:PROJECT[/LOCATION]:STATUS[:RATE[:REASON]]")
        method, where, status_text = parts[:3]
        project, slash, location = where.partition("/")
        try:
            status = int(status_text)
            rate = float(parts[3]) if len(parts) > 3 and parts[3] else 1.0
        except ValueError:
            raise ValueError("STATUS must be an integer and RATE a number") from None
        extra = parts[4] if len(parts) > 4 and parts[4] else None
        # One slot for both: status names and reasons never share a spelling.
        is_name = extra is not None and extra in RULE_STATUS_NAMES.get(status, ())
        return cls(status=status, method=method, project=project,
                   location=location if slash else ANY, rate=rate,
                   status_name=extra if is_name else None,
                   reason=None if is_name else extra)


@dataclass(frozen=True)
class Faults:
    """Fault probabilities; per-method maps hold only methods with a non-zero setting."""

    error_rates: Mapping[str, float] = field(default_factory=dict)
    error_statuses: Mapping[str, int] = field(default_factory=dict)  # default 503
    drop_rates: Mapping[str, float] = field(default_factory=dict)
    latency_s: float = 0.0
    latency_probability: float = 1.0
    lost_reply_rate: float = 0.0
    lost_reply_mode: LostReplyMode = LostReplyMode.DROP
    # A valid create "lands late": no answer now (held late_create_hold_s wall seconds, then the
    # connection closes); the job appears hold + delay clock seconds after the request arrived.
    late_create_rate: float = 0.0
    late_create_delay_s: float = 90.0
    late_create_hold_s: float = 0.0
    # Lists show the world as it was this many clock seconds ago (eventual consistency).
    list_lag_s: float = 0.0
    error_rules: tuple[ErrorRule, ...] = ()
    malformed_rates: Mapping[str, float] = field(default_factory=dict)
    truncated_rates: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Python callers may hand a list; keep the value immutable and comparable.
        object.__setattr__(self, "error_rules", tuple(self.error_rules))
        for rule in self.error_rules:
            if not isinstance(rule, ErrorRule):
                raise ValueError("error_rules must hold ErrorRule values")
        _probability(self.late_create_rate, "late_create_rate")
        for key in ("late_create_delay_s", "late_create_hold_s", "list_lag_s"):
            _non_negative(getattr(self, key), key)
        for key in ("malformed_rates", "truncated_rates"):
            rates: Mapping[str, float] = getattr(self, key)
            for method, rate in rates.items():
                if method not in METHODS:
                    raise ValueError(f"{key}: unknown method {method}")
                _probability(rate, f"{key}.{method}")

    def error_status(self, method: str) -> int:
        return self.error_statuses.get(method, 503)

    def to_json(self) -> dict[str, Any]:
        return {
            "error_rate": {m: self.error_rates.get(m, 0.0) for m in METHODS},
            "error_status": {m: self.error_status(m) for m in METHODS},
            "drop_rate": {m: self.drop_rates.get(m, 0.0) for m in METHODS},
            "latency_s": self.latency_s,
            "latency_probability": self.latency_probability,
            "lost_reply_rate": self.lost_reply_rate,
            "lost_reply_mode": self.lost_reply_mode.value,
            "late_create_rate": self.late_create_rate,
            "late_create_delay_s": self.late_create_delay_s,
            "late_create_hold_s": self.late_create_hold_s,
            "list_lag_s": self.list_lag_s,
            "error_rules": [rule.to_json() for rule in self.error_rules],
            "malformed_rate": {m: self.malformed_rates.get(m, 0.0) for m in METHODS},
            "truncated_rate": {m: self.truncated_rates.get(m, 0.0) for m in METHODS},
        }

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        """Build from the admin endpoint's JSON; a float/int for a per-method key applies to all
        methods. Bad input raises ValueError naming the key."""
        if not isinstance(body, dict):
            raise ValueError("faults must be a JSON object")
        known = {"error_rate", "error_status", "drop_rate", "latency_s", "latency_probability",
                 "lost_reply_rate", "lost_reply_mode", "late_create_rate", "late_create_delay_s",
                 "late_create_hold_s", "list_lag_s", "error_rules", "malformed_rate",
                 "truncated_rate"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown fault key(s): {', '.join(unknown)}")
        error_rates = _per_method(body.get("error_rate"), "error_rate", _probability)
        statuses = _per_method(body.get("error_status"), "error_status", _status)
        drop_rates = _per_method(body.get("drop_rate"), "drop_rate", _probability)
        malformed = _per_method(body.get("malformed_rate"), "malformed_rate", _probability)
        truncated = _per_method(body.get("truncated_rate"), "truncated_rate", _probability)
        mode_text = str(body.get("lost_reply_mode", LostReplyMode.DROP.value))
        try:
            mode = LostReplyMode(mode_text)
        except ValueError:
            raise ValueError("lost_reply_mode must be 'drop' or '503'") from None
        latency = _number(body.get("latency_s", 0.0), "latency_s")
        if latency < 0:
            raise ValueError("latency_s must be >= 0")
        return cls(
            error_rates={k: v for k, v in error_rates.items() if v > 0},
            # Only non-default statuses are kept, so equal settings compare equal.
            error_statuses={k: int(v) for k, v in statuses.items() if int(v) != 503},
            drop_rates={k: v for k, v in drop_rates.items() if v > 0},
            latency_s=latency,
            latency_probability=_probability(body.get("latency_probability", 1.0),
                                             "latency_probability"),
            lost_reply_rate=_probability(body.get("lost_reply_rate", 0.0), "lost_reply_rate"),
            lost_reply_mode=mode,
            late_create_rate=_probability(body.get("late_create_rate", 0.0), "late_create_rate"),
            late_create_delay_s=_non_negative(body.get("late_create_delay_s", 90.0),
                                              "late_create_delay_s"),
            late_create_hold_s=_non_negative(body.get("late_create_hold_s", 0.0),
                                             "late_create_hold_s"),
            list_lag_s=_non_negative(body.get("list_lag_s", 0.0), "list_lag_s"),
            error_rules=_rules(body.get("error_rules", [])),
            malformed_rates={k: v for k, v in malformed.items() if v > 0},
            truncated_rates={k: v for k, v in truncated.items() if v > 0},
        )


def _fullmatch(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


def _probability(value: Any, key: str) -> float:
    p = _number(value, key)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{key} must be within [0, 1]")
    return p


def _non_negative(value: Any, key: str) -> float:
    seconds = _number(value, key)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{key} must be a finite number >= 0")
    return seconds


def _status(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int) or value not in FAULT_STATUSES:
        raise ValueError(f"{key} must be one of {sorted(FAULT_STATUSES)}")
    return float(value)


def _per_method(value: Any, key: str, check: Any) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, dict):
        bad = sorted(set(value) - set(METHODS))
        if bad:
            raise ValueError(f"{key}: unknown method(s) {', '.join(bad)}; use {', '.join(METHODS)}")
        return {str(m): float(check(v, f"{key}.{m}")) for m, v in value.items()}
    single = float(check(value, key))
    return dict.fromkeys(METHODS, single)


def _rules(value: Any) -> tuple[ErrorRule, ...]:
    if not isinstance(value, list):
        raise ValueError("error_rules must be a list of objects")
    rules = []
    for index, item in enumerate(value):
        try:
            rules.append(ErrorRule.from_json(item))
        except ValueError as exc:
            raise ValueError(f"error_rules[{index}]: {exc}") from None
    return tuple(rules)


class FaultDice:
    """Seeded random decisions for faults; one instance per emulator so runs are reproducible."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def roll(self, probability: float) -> bool:
        # Never consume randomness for disabled faults, so enabling one fault does not
        # reshuffle the decisions of an unrelated run with the same seed.
        if probability <= 0.0:
            return False
        if probability >= 1.0:
            return True
        return self._rng.random() < probability

    def decide(self, faults: Faults, method: str) -> FaultAction:
        if self.roll(faults.drop_rates.get(method, 0.0)):
            return FaultAction.DROP
        if self.roll(faults.error_rates.get(method, 0.0)):
            return FaultAction.ERROR
        return FaultAction.NONE

    def error_rule(self, faults: Faults, method: str, project: str,
                   location: str) -> ErrorRule | None:
        """The first rule that matches this call and whose roll hits; a rule that does not
        match rolls nothing."""
        for rule in faults.error_rules:
            if rule.matches(method, project, location) and self.roll(rule.rate):
                return rule
        return None

    def reply_fault(self, faults: Faults, method: str) -> FaultAction:
        if self.roll(faults.malformed_rates.get(method, 0.0)):
            return FaultAction.MALFORMED
        if self.roll(faults.truncated_rates.get(method, 0.0)):
            return FaultAction.TRUNCATED
        return FaultAction.NONE

    def latency_s(self, faults: Faults) -> float:
        if faults.latency_s > 0 and self.roll(faults.latency_probability):
            return faults.latency_s
        return 0.0


def injected_error(http_status: int, project_number: str) -> TuningdError:
    """The Google-style error a real front end gives for this status."""
    if http_status == 429:
        return rate_limit_error(
            "Resource management (CRUD) requests",
            "aiplatform.googleapis.com/resource_management_requests", project_number,
        )
    if http_status == 500:
        return Internal("Internal error encountered.")
    if http_status == 502:
        return Unavailable("Bad Gateway", http_status=502)
    if http_status == 504:
        return DeadlineExceeded("Deadline expired before operation could complete.")
    return Unavailable("The service is currently unavailable.")


def rate_limit_error(quota_name: str, quota_metric: str, project_number: str,
                     limit: int | None = None) -> ResourceExhausted:
    """429 RESOURCE_EXHAUSTED shaped like Google's quota errors (spec §5)."""
    message = (
        f"Quota exceeded for quota metric '{quota_name}' and limit '{quota_name} per minute "
        f"per region' of service 'aiplatform.googleapis.com' for consumer "
        f"'project_number:{project_number}'."
    )
    metadata = {
        "service": "aiplatform.googleapis.com",
        "quota_metric": quota_metric,
        "quota_limit": f"{quota_name} per minute per region",
        "consumer": f"projects/{project_number}",
    }
    if limit is not None:
        metadata["quota_limit_value"] = str(limit)
    details = [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "RATE_LIMIT_EXCEEDED",
        "domain": "googleapis.com",
        "metadata": metadata,
    }]
    return ResourceExhausted(message, details=details)
