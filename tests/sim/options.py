"""What a simulation run may do (features, bounds) and the world each seed draws from them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

# Everything the sim can switch on. A replay command names the exact set in force.
FEATURES: tuple[str, ...] = (
    "crashes",          # kill -9 and restart of the daemon
    "clock_jumps",      # the engine's wall clock steps forward (or back a little)
    "limit_changes",    # SIGHUP with new limits (incl. the publishers/... model spelling)
    "bursts",           # planning rounds in quick succession (submit tasks not yet running)
    "bad_places",       # jobs for a place Vertex refuses (US-Central1, a bad project id)
    "bad_specs",        # jobs Vertex rejects with 400 (unknown base model)
    "model_spellings",  # publishers/google/models/<id> in job specs and limit keys
    "errors",           # 429/5xx error rates, dropped connections
    "lost_replies",     # creates whose reply is lost (drop or 503) after the job was made
    "reply_resets",     # any call's reply lost after Vertex acted (gate-level reset)
    "timeouts",         # requests held past the client timeout while time moves (else time
                        # stops short of the earliest deadline until the request moves on)
    "late_creates",     # emulator: a create that makes its job only later (emu-faults)
    "list_lag",         # emulator: new jobs show in lists only after a lag (emu-faults)
    "create_denied",    # emulator: a project-wide 403/404 on create, for a while
    "get_not_found",    # emulator: a 404 on every get in a location, for a while
    "garbled",          # emulator: malformed / truncated 2xx bodies (emu-faults)
)

# Every feature; the CLI default and what the known-breakage seeds were found with.
FULL: frozenset[str] = frozenset(FEATURES)

# What the engine on main is supposed to survive today, so that the CI random subset is green.
# While a breakage is known and unfixed (known_seeds.py), its features stay out of this set; when
# its fix lands they come back in. Every breakage found so far (issue 7) is fixed: all features.
CI_BASELINE: frozenset[str] = FULL

PROFILES: dict[str, frozenset[str]] = {"full": FULL, "ci": CI_BASELINE}

# How far past the daemon's assumptions --beyond-bounds draws late creates and list lags (the
# engine's absent verdict has margin: with the defaults it comes 270 s after a failed attempt).
BEYOND_FACTOR = 10.0


@dataclass(frozen=True)
class SimOptions:
    """One run's knobs. Bounds are what the daemon is configured to assume (issue 7)."""

    features: frozenset[str] = FULL
    steps: int = 300
    max_jobs: int = 30
    # Past the documented bounds: late creates and list lag longer than the daemon assumes,
    # big clock jumps; then a duplicate is allowed if it is cancelled or reported in time.
    beyond_bounds: bool = False
    # What the daemon is configured to assume (vertex.request_timeout_s, reconcile.list_lag_s),
    # and so the bounds of the faults: a create lands at most one request timeout after the
    # attempt ends, a list lags at most list_lag_s. The client gives up after the timeout.
    request_timeout_s: float = 60.0
    list_lag_s: float = 30.0
    # The faults' own bounds, when they should differ from what the daemon assumes.
    late_create_max_s: float | None = None  # None: request_timeout_s
    list_lag_max_s: float | None = None  # None: list_lag_s
    # Run the engine with its Prometheus metrics, as the daemon does (about a quarter of the CPU
    # of a seed; the trace is the same either way).
    metrics: bool = True
    # Quiesce phase: give up (and report the stuck jobs) after this much simulated time.
    quiesce_limit_s: float = 14 * 86400.0
    quiesce_max_iterations: int = 20_000

    @property
    def late_create_bound_s(self) -> float:
        """The longest late create drawn (ten times as long beyond the bounds)."""
        bound = self.request_timeout_s if self.late_create_max_s is None else self.late_create_max_s
        return bound * (BEYOND_FACTOR if self.beyond_bounds else 1.0)

    @property
    def list_lag_bound_s(self) -> float:
        """The longest list lag drawn (ten times as long beyond the bounds)."""
        bound = self.list_lag_s if self.list_lag_max_s is None else self.list_lag_max_s
        return bound * (BEYOND_FACTOR if self.beyond_bounds else 1.0)

    def has(self, feature: str) -> bool:
        return feature in self.features

    def with_features(self, features: frozenset[str]) -> SimOptions:
        unknown = sorted(features - FULL)
        if unknown:
            raise ValueError(f"unknown feature(s): {', '.join(unknown)}")
        return replace(self, features=features)

    def cli_args(self) -> str:
        """The flags that reproduce these options exactly."""
        parts = [f"--features {','.join(f for f in FEATURES if f in self.features) or 'none'}"]
        defaults = SimOptions()
        if self.steps != defaults.steps:
            parts.append(f"--steps {self.steps}")
        if self.max_jobs != defaults.max_jobs:
            parts.append(f"--jobs {self.max_jobs}")
        if self.beyond_bounds:
            parts.append("--beyond-bounds")
        if self.request_timeout_s != defaults.request_timeout_s:
            parts.append(f"--request-timeout {self.request_timeout_s:g}")
        if self.late_create_max_s is not None:
            parts.append(f"--late-create-max {self.late_create_max_s:g}")
        if self.list_lag_s != defaults.list_lag_s:
            parts.append(f"--list-lag {self.list_lag_s:g}")
        if self.list_lag_max_s is not None:
            parts.append(f"--list-lag-max {self.list_lag_max_s:g}")
        return " ".join(parts)


PROJECTS: tuple[str, ...] = ("proj-a", "proj-b")
LOCATIONS: tuple[str, ...] = ("us-central1", "europe-west4")
MODELS: tuple[str, ...] = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash-001")
PUBLISHER_PREFIX = "publishers/google/models/"
# Places Vertex refuses; the control API would too, but a job must not wedge the engine.
BAD_PLACES: tuple[tuple[str, str], ...] = (("proj-a", "US-Central1"), ("proj a", "us-central1"))
BAD_MODEL = "gemini-0.9-nonexistent"


@dataclass(frozen=True)
class WorldParams:
    """Everything about one seed's world that is drawn once, before the first step."""

    jobs: int
    pending_s: float
    job_s: float
    cancel_s: float
    cancel_completes_probability: float
    quota: int
    quota_reject: bool
    bad_dataset_probability: float
    max_active: int
    per_location: dict[str, int] = field(default_factory=dict)
    per_base_model: dict[str, int] = field(default_factory=dict)
    initial_interval_s: float = 30.0
    max_interval_s: float = 300.0
    retry_cap_s: float = 300.0
    sweep_interval_s: float = 300.0

    @classmethod
    def draw(cls, rng: random.Random, options: SimOptions) -> WorldParams:
        limits = draw_limits(rng, options)
        initial = rng.choice((10.0, 30.0, 60.0))
        return cls(
            jobs=rng.randint(min(10, options.max_jobs), options.max_jobs),
            pending_s=rng.uniform(5, 45), job_s=rng.uniform(30, 400),
            cancel_s=rng.uniform(1, 60), cancel_completes_probability=rng.choice((0, 0, 0.3)),
            quota=rng.randint(1, 8), quota_reject=rng.random() < 0.3,
            bad_dataset_probability=rng.choice((0.0, 0.1, 0.3)),
            max_active=limits[0], per_location=limits[1], per_base_model=limits[2],
            initial_interval_s=initial, max_interval_s=rng.choice((initial * 8, 600.0)),
            retry_cap_s=rng.choice((30.0, 300.0)), sweep_interval_s=rng.choice((300.0, 900.0)),
        )


def model_key(rng: random.Random, model: str, options: SimOptions) -> str:
    """A model id as written in a spec or a limit key: bare, or (rarely) the publisher path."""
    if options.has("model_spellings") and rng.random() < 0.3:
        return PUBLISHER_PREFIX + model
    return model


def draw_limits(rng: random.Random,
                options: SimOptions) -> tuple[int, dict[str, int], dict[str, int]]:
    """(max_active, per_location, per_base_model), each scope limited or not at random."""
    max_active = rng.choice((1, 1, 2, 3, 4, 6))
    per_location = {loc: rng.randint(1, 3) for loc in LOCATIONS if rng.random() < 0.3}
    per_model: dict[str, int] = {}
    for model in MODELS:
        if rng.random() < 0.3:
            per_model[model_key(rng, model, options)] = rng.randint(1, 3)
    return max_active, per_location, per_model
