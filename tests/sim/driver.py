"""One seed: pick every step with the seeded RNG, run it to quiescence, check the invariants."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from tests.sim import options as opt
from tests.sim.faults import CLEAR, draw_regime
from tests.sim.gate import Parked, Phase, SimStuck
from tests.sim.invariants import Checker, SimJob, Violation
from tests.sim.world import BAD_DATASET, GOOD_DATASET, World, spec
from tuningd.core.errors import TuningdError
from tuningd.core.limits import Limits
from tuningd.core.model import LocalState

TAIL_LINES = 40
_SHORT = {LocalState.QUEUED: "q", LocalState.SUBMITTING: "s", LocalState.PENDING: "p",
          LocalState.RUNNING: "r", LocalState.CANCELLING: "c", LocalState.SUCCEEDED: "S",
          LocalState.FAILED: "F", LocalState.CANCELLED: "C"}


@dataclass
class Outcome:
    """The result of one seed."""

    seed: int
    options: opt.SimOptions
    violation: Violation | None
    steps: int
    jobs: int
    sim_s: float
    wall_s: float
    trace_hash: str
    tail: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violation is None

    def replay_command(self) -> str:
        return f"python -m tests.sim --seed {self.seed} {self.options.cli_args()} -v"


@contextlib.contextmanager
def engine_log_capture(sink: list[dict[str, Any]]) -> Iterator[None]:
    """Route structlog warnings and errors into `sink`; info is dropped at no cost."""
    previous = structlog.get_config()

    def collect(logger: Any, method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in event.items() if isinstance(v, str | int | float | list)}
        if event.get("exc_info"):
            exc = sys.exc_info()[1]
            kept["error"] = f"{type(exc).__name__}: {exc}"
        sink.append(kept)
        raise structlog.DropEvent

    structlog.configure(processors=[collect],
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.ReturnLoggerFactory(),
                        cache_logger_on_first_use=False)
    quiet = logging.getLogger("aiohttp")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        structlog.configure(**previous)
        quiet.setLevel(level)


class Driver:
    """Runs one seed: main phase (random steps), then quiesce (no faults, run to the end)."""

    def __init__(self, seed: int, options: opt.SimOptions,
                 echo: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        self.options = options
        self.rng = random.Random(seed)
        self.params = opt.WorldParams.draw(random.Random(f"params-{seed}"), options)
        self.world = World(seed, options, self.params)
        self.checker = Checker(self.world)
        self.echo = echo
        self.trace: list[str] = []
        self._hash = hashlib.sha256()
        self.step_no = 0
        self._request_ids: list[tuple[str, str, str]] = []
        self._answered: dict[tuple[str, str], int] = {}
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ running

    async def run(self) -> Outcome:
        started = time.perf_counter()
        violation: Violation | None = None
        with engine_log_capture(self.world.events):
            await self.world.open()
            try:
                self._log(f"world {self.params}")
                violation = await self._main() or await self._quiesce()
                if violation is None:
                    violation = await self.checker.check_end()
            except SimStuck as exc:
                violation = Violation("sim", str(exc))
            finally:
                await self.world.close()
        if violation is not None:
            self._log(f"VIOLATION {violation.invariant}: {violation.message}")
        return Outcome(self.seed, self.options, violation, self.step_no,
                       len(self.checker.jobs), self.world.elapsed(),
                       time.perf_counter() - started, self._hash.hexdigest(),
                       self.trace[-TAIL_LINES:], self._stats())

    def _stats(self) -> dict[str, int]:
        """What the run went through, for the sweep summary (coverage, not correctness)."""
        state = self.world.emulator.state
        answers = Counter[str]()
        for counts in state.request_counts.values():
            answers.update(counts)
        jobs = list(state.jobs.values())
        self.stats["remote jobs"] = len(jobs)
        self.stats["late landings"] = sum(
            1 for j in jobs if j.transitions and "landed late" in j.transitions[0].reason)
        self.stats["extras"] = sum(1 for j in jobs if self.checker.extra(j) is not None)
        self.stats["remote cancels"] = sum(1 for j in jobs if j.cancel_s is not None)
        self.stats["crashes"] = self.world.incarnation - 1
        self.stats["fault answers"] = sum(n for k, n in answers.items() if k != "200")
        self.stats["late creates"] = answers["late_create"]
        return dict(self.stats)

    def _log(self, line: str) -> None:
        self.trace.append(line)
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if self.echo is not None:
            self.echo(line)

    def _digest(self) -> str:
        local = self.world.local_counts
        states = "".join(f"{_SHORT[s]}{local[s]}" for s in LocalState if local[s])
        live, total = len(self.world.remote_live()), len(self.world.emulator.state.jobs)
        return f"L[{states or '-'}] R[{live}/{total}] P{len(self.world.gate.parked)}"

    async def _after(self, text: str) -> Violation | None:
        await self.world.gate.quiesce()
        self.step_no += 1
        seen = self._answers()
        if seen:
            text = f"{text} [{seen}]"
        self._log(f"{self.step_no:04d} {self.world.elapsed():9.1f} {text} | {self._digest()}")
        return self.checker.check_step()

    def _answers(self) -> str:
        """What the emulator answered since the last step (e.g. `create:late_create`)."""
        out = []
        for method, counts in self.world.emulator.state.request_counts.items():
            for outcome, n in counts.items():
                new = n - self._answered.get((method, outcome), 0)
                if new:
                    out.append(f"{method}:{outcome}" + (f"x{new}" if new > 1 else ""))
                    self._answered[(method, outcome)] = n
        return " ".join(sorted(out))

    # ------------------------------------------------------------------ main phase

    def _choices(self) -> list[tuple[str, float]]:
        o = self.options
        out: list[tuple[str, float]] = [("round", 15.0), ("advance", 25.0), ("advance_due", 5.0),
                                        ("faults", 3.0)]
        if self.world.gate.parked:
            out.append(("release", 30.0))
        if len(self.checker.jobs) < self.params.jobs:
            out.append(("submit", 10.0))
        if self.checker.jobs:
            out.append(("cancel", 3.0))
        for feature, name, weight in (("bursts", "burst", 3.0), ("limit_changes", "limits", 1.0),
                                      ("crashes", "crash", 0.7), ("clock_jumps", "jump", 0.5)):
            if o.has(feature):
                out.append((name, weight))
        return out

    async def _main(self) -> Violation | None:
        for _ in range(self.options.steps):
            choices = self._choices()
            kind = self.rng.choices([c[0] for c in choices], [c[1] for c in choices])[0]
            text = await getattr(self, f"_step_{kind}")()
            violation = await self._after(text)
            if violation is not None:
                return violation
        return None

    async def _step_round(self) -> str:
        return f"round started {self.world.plan_round()}"

    async def _step_burst(self) -> str:
        rounds = self.rng.randint(2, 3)
        started = [self.world.plan_round() for _ in range(rounds)]
        return f"burst of {rounds} rounds started {started}"

    async def _step_release(self) -> str:
        parked = self.rng.choice(self.world.gate.sorted_parked())
        error: BaseException | None = None
        if (parked.phase is Phase.REPLY and self.world.regime.reply_reset_rate > 0
                and self.rng.random() < self.world.regime.reply_reset_rate):
            error = aiohttp.ServerDisconnectedError()
        self.world.gate.release(parked.key, error)
        self.stats["reply resets"] += error is not None
        return f"release {parked.key} {parked.method}{' RESET' if error else ''}"

    async def _step_advance(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            dt = self.rng.uniform(0.1, 5.0)
        elif r < 0.85:
            dt = self.rng.uniform(5.0, 120.0)
        elif r < 0.95:
            dt = self.rng.uniform(120.0, 1800.0)
        else:
            dt = self.rng.uniform(1800.0, 7200.0)
        if self.rng.random() < 0.15:
            return self._advance(self._clip(dt), "stalled ")
        return self._prompt(self._clip(dt))

    async def _step_advance_due(self) -> str:
        return self._prompt(self._clip(3600.0))

    def _clip(self, dt: float) -> float:
        """Requests in flight mostly answer before their client gives up, so time mostly stops
        short of the earliest deadline; without the timeouts feature, always."""
        deadline = self.world.gate.next_deadline_s()
        if deadline is None:
            return max(dt, 0.0)
        left = deadline - self.world.now()
        if not self.options.has("timeouts"):
            return max(0.0, min(dt, left - 0.001))
        if self.rng.random() < 0.9:
            return max(0.0, min(dt, left * self.rng.uniform(0.05, 0.95)))
        return max(dt, 0.0)

    def _prompt(self, dt: float) -> str:
        """Time passes for a daemon whose loop wakes when something is due: rounds run at each
        due time on the way, and the passage stops at the first round that starts an action
        (or at the first request timeout)."""
        w = self.world
        moved = 0.0
        started = 0
        expired: list[Parked] = []
        while True:
            started = w.plan_round()
            if started or moved >= dt or expired:
                break
            step = min(dt - moved, max(w.last_delay_s, 0.01))
            deadline = w.gate.next_deadline_s()
            if deadline is not None:  # a client gives up at its deadline, not later
                step = min(step, max(deadline - w.now(), 0.0) + 0.001)
            w.advance(step, awake=True)
            moved += step
            expired = w.gate.expire()
            self.stats["timeouts"] += len(expired)
        note = f" timed out {[p.key for p in expired]}" if expired else ""
        return f"advance {moved:.1f}s of {dt:.1f}s, round started {started}{note}"

    def _advance(self, dt: float, how: str = "", *, awake: bool = False) -> str:
        self.world.advance(dt, awake=awake)
        expired = self.world.gate.expire()
        self.stats["timeouts"] += len(expired)
        note = f" timed out {[p.key for p in expired]}" if expired else ""
        return f"{how}advance {dt:.1f}s{note}"

    async def _step_submit(self) -> str:
        count = self.rng.randint(2, 4) if self.rng.random() < 0.15 else 1
        count = min(count, self.params.jobs - len(self.checker.jobs))
        calls = [self._submission() for _ in range(count)]
        results = await asyncio.gather(*(self._submit_one(*c) for c in calls))
        return "submit " + "; ".join(results)

    def _submission(self) -> tuple[str, str, dict[str, Any], int, str | None, bool]:
        rng, o = self.rng, self.options
        project, location = rng.choice(opt.PROJECTS), rng.choice(opt.LOCATIONS)
        valid = True
        if o.has("bad_places") and rng.random() < 0.03:
            project, location = rng.choice(opt.BAD_PLACES)
            valid = False
        model = opt.model_key(rng, rng.choice(opt.MODELS), o)
        if o.has("bad_specs") and rng.random() < 0.03:
            model = opt.BAD_MODEL
            valid = False
        dataset = (BAD_DATASET if rng.random() < self.params.bad_dataset_probability
                   else GOOD_DATASET)
        request_id: str | None = None
        r = rng.random()
        if r < 0.1 and self._request_ids:
            project, location, request_id = rng.choice(self._request_ids)
        elif r < 0.4:
            request_id = f"req-{len(self._request_ids) + 1}"
            self._request_ids.append((project, location, request_id))
        body = spec(model, dataset, f"t{self.step_no}")
        return project, location, body, rng.randint(-1, 3), request_id, valid

    async def _submit_one(self, project: str, location: str, body: dict[str, Any],
                          priority: int, request_id: str | None, valid: bool) -> str:
        job, created = await self.world.engine.submit(project, location, body,
                                                      priority=priority, request_id=request_id)
        if created:
            self.checker.jobs[job.id] = SimJob(job.id, valid)
        where = f"{project}/{location} {body['baseModel']} p{priority}"
        return f"{job.id}{'' if created else ' (replayed)'} {where} rid={request_id}"

    async def _step_cancel(self) -> str:
        ids = sorted(self.checker.jobs)
        live = [i for i in ids if not self.world.local[i].state.is_terminal]
        job_id = self.rng.choice(live if live and self.rng.random() < 0.85 else ids)
        try:
            job = await self.world.engine.cancel(job_id)
        except TuningdError as exc:
            return f"cancel {job_id}: {type(exc).__name__}"
        sim = self.checker.jobs[job_id]
        if sim.cancelled_in is None:
            sim.cancelled_in = job.state
            sim.cancelled_at_s = self.world.now()
        return f"cancel {job_id} -> {job.state.value}"

    async def _step_limits(self) -> str:
        max_active, per_location, per_model = opt.draw_limits(self.rng, self.options)
        limits = Limits(max_active=max_active, per_location=per_location,
                               per_base_model=per_model)
        self.world.reload(limits)
        self.checker.on_limits(limits)
        return f"limits max={max_active} loc={per_location} model={per_model}"

    async def _step_faults(self) -> str:
        regime = draw_regime(self.rng, self.options)
        self.world.set_regime(regime)
        return f"faults {regime.label}"

    async def _step_crash(self) -> str:
        parked = len(self.world.gate.parked)
        await self.world.crash()
        return f"crash with {parked} request(s) in flight; restart #{self.world.incarnation}"

    async def _step_jump(self) -> str:
        far = 1800.0 if self.options.beyond_bounds else 10.0
        dt = self.rng.uniform(1.0, far) if self.rng.random() < 0.8 else -self.rng.uniform(0, 2)
        self.world.offset_s += dt
        return f"engine clock {dt:+.1f}s (offset {self.world.offset_s:+.1f}s)"

    # ------------------------------------------------------------------ quiesce phase

    async def _quiesce(self) -> Violation | None:
        """No more faults: release what is in flight, run rounds, jump to the next due time,
        until every job and every remote job has ended (or the limit is reached)."""
        w = self.world
        w.set_regime(CLEAR)
        w.durations.hurry = True
        self._log("quiesce: faults cleared, new remote jobs run 10x faster")
        limit_s = w.elapsed() + self.options.quiesce_limit_s
        for _ in range(self.options.quiesce_max_iterations):
            if w.gate.parked:
                parked = w.gate.sorted_parked()[0]
                w.gate.release(parked.key)
                text = f"Q release {parked.key} {parked.method}"
            elif started := w.plan_round():
                text = f"Q round started {started}"
            elif self._all_ended() or w.elapsed() > limit_s:
                return None
            else:
                dt = w.last_delay_s if math.isfinite(w.last_delay_s) else 60.0
                text = "Q " + self._advance(min(max(dt, 0.5), 3600.0), awake=True)
            violation = await self._after(text)
            if violation is not None:
                return violation
        return None

    def _all_ended(self) -> bool:
        return self.world.unfinished() == 0 and not self.world.remote_live()


async def run_seed(seed: int, options: opt.SimOptions,
                   echo: Callable[[str], None] | None = None) -> Outcome:
    return await Driver(seed, options, echo).run()
