"""Concurrency limits and their scopes: static caps, caps learned from creates, active counts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from enum import StrEnum

from tuningd.core.model import ACTIVE_STATES, Job, LocalState
from tuningd.vertex.wire import base_model_id


@dataclass(frozen=True)
class Limits:
    """Configured caps on active jobs. A scope missing from a mapping is unlimited.

    Base models are keyed by their bare id, however they were written (`gemini-2.5-flash` and
    `publishers/google/models/gemini-2.5-flash` are one scope).
    """

    max_active: int = 1
    per_location: Mapping[str, int] = field(default_factory=dict)
    per_base_model: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        canonical: dict[str, int] = {}
        for name, limit in self.per_base_model.items():
            key = base_model_id(name)
            canonical[key] = min(limit, canonical.get(key, limit))
        object.__setattr__(self, "per_base_model", canonical)

    def limit_for(self, scope: Scope) -> int | None:
        if scope.kind is ScopeKind.GLOBAL:
            return self.max_active
        if scope.kind is ScopeKind.LOCATION:
            return self.per_location.get(scope.name)
        return self.per_base_model.get(scope.name)


# ---------------------------------------------------------------------------------------------
# Scopes and adaptive limits (design §4)


class ScopeKind(StrEnum):
    GLOBAL = "global"
    LOCATION = "location"
    BASE_MODEL = "base_model"


@dataclass(frozen=True, order=True)
class Scope:
    kind: ScopeKind
    name: str = ""


GLOBAL = Scope(ScopeKind.GLOBAL)


def scopes_of(job: Job) -> tuple[Scope, Scope, Scope]:
    """Every scope a job counts in: global, its location, its base model (bare id)."""
    return (GLOBAL, Scope(ScopeKind.LOCATION, job.location),
            Scope(ScopeKind.BASE_MODEL, base_model_id(job.base_model)))


def active_counts(jobs: Iterable[Job],
                  creating: AbstractSet[str] = frozenset()) -> dict[Scope, int]:
    """Active jobs per scope: submitting, pending, running, cancelling, and queued jobs whose
    create is already under way (`creating`: planned, its `submitting` not yet committed)."""
    counts: dict[Scope, int] = defaultdict(int)
    for job in jobs:
        if job.state in ACTIVE_STATES or (job.state is LocalState.QUEUED and job.id in creating):
            for scope in scopes_of(job):
                counts[scope] += 1
    return dict(counts)


@dataclass(frozen=True)
class AdaptiveLimits:
    """Effective caps lowered by create 429s and raised again additively; the engine keeps one.

    `caps` holds only lowered scopes; `successes` counts creates since the last raise.
    Immutable: every method returns a new value.
    """

    caps: Mapping[Scope, int] = field(default_factory=dict)
    successes: Mapping[Scope, int] = field(default_factory=dict)
    recover_after_successes: int = 1

    def effective(self, scope: Scope, limits: Limits) -> int | None:
        """The cap in force for a scope (None: unlimited)."""
        configured = limits.limit_for(scope)
        cap = self.caps.get(scope)
        if cap is None:
            return configured
        return cap if configured is None else min(cap, configured)

    def on_throttled(self, scopes: Iterable[Scope], active: Mapping[Scope, int]) -> AdaptiveLimits:
        """A create got 429: each given scope drops to its active count (at least 1).

        `active` must not count the throttled job itself (it goes back to queued).
        """
        caps = dict(self.caps)
        successes = dict(self.successes)
        for scope in scopes:
            caps[scope] = max(1, active.get(scope, 0))
            successes[scope] = 0
        return replace(self, caps=caps, successes=successes)

    def on_create_succeeded(self, scopes: Iterable[Scope], limits: Limits) -> AdaptiveLimits:
        """A create succeeded: lowered scopes gain +1 every `recover_after_successes` creates."""
        caps = dict(self.caps)
        successes = dict(self.successes)
        for scope in scopes:
            if scope not in caps:
                continue
            count = successes.get(scope, 0) + 1
            if count >= self.recover_after_successes:
                count = 0
                caps[scope] += 1
            successes[scope] = count
            configured = limits.limit_for(scope)
            if configured is not None and caps[scope] >= configured:
                del caps[scope]
                successes.pop(scope, None)
        return replace(self, caps=caps, successes=successes)

    def reset(self) -> AdaptiveLimits:
        """Forget every lowered cap (e.g. on a config reload)."""
        return replace(self, caps={}, successes={})


