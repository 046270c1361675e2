"""The fault schedule: seeded regimes of emulator faults and gate-level reply resets."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from tests.sim.options import LOCATIONS, PROJECTS, SimOptions
from tuningd.emulator import METHODS, Faults, LostReplyMode

# Fields of the emulator's Faults on this branch: the emu-faults ones appear once it is merged,
# and the sim uses them only then.
SUPPORTED: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Faults))
_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Regime:
    """The faults in force until the next fault step."""

    faults: Faults
    reply_reset_rate: float = 0.0
    label: str = "none"


CLEAR = Regime(Faults())


def _rate(rng: random.Random) -> float:
    return rng.choice((0.05, 0.2, 0.5, 1.0))


def _some_methods(rng: random.Random) -> list[str]:
    return [m for m in METHODS if rng.random() < 0.4] or [rng.choice(METHODS)]


def draw_regime(rng: random.Random, options: SimOptions) -> Regime:
    """A random mix of the enabled kinds of faults (none at all about a tenth of the time)."""
    kinds = [k for k in ("errors", "lost_replies", "reply_resets", "late_creates", "list_lag",
                         "create_denied", "get_not_found", "garbled")
             if options.has(k) and _supported(k)]
    # Each kind on its own coin, so that any mix can happen and none is rare.
    chosen = [k for k in kinds if rng.random() < 0.3]
    if not chosen:
        return CLEAR
    kw: dict[str, Any] = {}
    labels: list[str] = []
    reset = 0.0
    for kind in chosen:
        if kind == "errors":
            rates = {m: _rate(rng) for m in _some_methods(rng)}
            statuses = {m: rng.choice(_STATUSES) for m in rates}
            kw["error_rates"] = rates
            kw["error_statuses"] = {m: s for m, s in statuses.items() if s != 503}
            labels.append("err{" + ",".join(f"{m}:{r:g}/{statuses[m]}"
                                            for m, r in sorted(rates.items())) + "}")
            if rng.random() < 0.5:
                drops = {m: rng.choice((0.05, 0.2, 0.5)) for m in _some_methods(rng)}
                kw["drop_rates"] = drops
                labels.append("drop{" + ",".join(f"{m}:{r:g}"
                                                 for m, r in sorted(drops.items())) + "}")
        elif kind == "lost_replies":
            rate = _rate(rng)
            mode = rng.choice((LostReplyMode.DROP, LostReplyMode.UNAVAILABLE))
            kw["lost_reply_rate"] = rate
            kw["lost_reply_mode"] = mode
            labels.append(f"lost{rate:g}/{mode.value}")
        elif kind == "reply_resets":
            reset = rng.choice((0.1, 0.3))
            labels.append(f"reset{reset:g}")
        elif kind == "late_creates":
            limit = options.late_create_bound_s
            delay = round(rng.uniform(1.0, limit), 1)
            kw["late_create_rate"] = _rate(rng)
            kw["late_create_delay_s"] = delay
            labels.append(f"late{kw['late_create_rate']:g}/{delay:g}s")
        elif kind == "list_lag":
            limit = options.list_lag_bound_s
            kw["list_lag_s"] = round(rng.uniform(1.0, limit), 1)
            labels.append(f"lag{kw['list_lag_s']:g}s")
        elif kind in ("create_denied", "get_not_found"):
            rule, text = _draw_rule(rng, kind)
            kw["error_rules"] = (*kw.get("error_rules", ()), rule)
            labels.append(text)
        elif kind == "garbled":
            rates = {m: rng.choice((0.1, 0.3)) for m in _some_methods(rng)}
            field = rng.choice(("malformed_rates", "truncated_rates"))
            kw[field] = rates
            labels.append(f"{field[:5]}{{" + ",".join(f"{m}:{r:g}"
                                                      for m, r in sorted(rates.items())) + "}")
    return Regime(Faults(**kw), reset, " ".join(labels) or "none")


def _supported(kind: str) -> bool:
    needs = {"late_creates": "late_create_rate", "list_lag": "list_lag_s",
             "create_denied": "error_rules", "get_not_found": "error_rules",
             "garbled": "malformed_rates"}
    field = needs.get(kind)
    return field is None or field in SUPPORTED


def _draw_rule(rng: random.Random, kind: str) -> tuple[Any, str]:
    """A project-wide 403 (or 404) on create, or a 404 on every get of a location: for as long
    as the regime lasts, as when a role or an API is switched off and on again."""
    from tuningd.emulator.faults import RULE_REASONS, ErrorRule

    if kind == "create_denied":
        project = rng.choice(PROJECTS)
        if rng.random() < 0.25:
            return (ErrorRule(404, method="create", project=project),
                    f"rule{{404 create {project}}}")
        reason = rng.choice(RULE_REASONS[403])
        return (ErrorRule(403, method="create", project=project, reason=reason),
                f"rule{{403 create {project} {reason}}}")
    location = rng.choice((*LOCATIONS, "*"))
    return ErrorRule(404, method="get", location=location), f"rule{{404 get {location}}}"
