"""Fault-injection settings (errors, latency, drops, lost create replies) and their seeded dice."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tuningd.errors import (
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    TuningdError,
    Unavailable,
)

METHODS: tuple[str, ...] = ("create", "get", "list", "cancel")
FAULT_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})


class LostReplyMode(StrEnum):
    """How a create whose job was really created loses its reply."""

    DROP = "drop"  # close the connection without a response
    UNAVAILABLE = "503"  # answer 503 UNAVAILABLE


class FaultAction(StrEnum):
    """What the fault dice decided for one request, checked in this order."""

    NONE = "none"
    DROP = "drop"
    ERROR = "error"


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
        }

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        """Build from the admin endpoint's JSON; a float/int for a per-method key applies to all
        methods. Bad input raises ValueError naming the key."""
        if not isinstance(body, dict):
            raise ValueError("faults must be a JSON object")
        known = {"error_rate", "error_status", "drop_rate", "latency_s", "latency_probability",
                 "lost_reply_rate", "lost_reply_mode"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown fault key(s): {', '.join(unknown)}")
        error_rates = _per_method(body.get("error_rate"), "error_rate", _probability)
        statuses = _per_method(body.get("error_status"), "error_status", _status)
        drop_rates = _per_method(body.get("drop_rate"), "drop_rate", _probability)
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
        )


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


def _probability(value: Any, key: str) -> float:
    p = _number(value, key)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{key} must be within [0, 1]")
    return p


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
