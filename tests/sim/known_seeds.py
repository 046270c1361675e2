"""Known breakages of the engine (issue 7), each with the smallest seed showing it: CI regressions.

A seed is replayed with the CI baseline features plus the breakage's own (`options()`); it broke
the named invariant on the engine it was found on. tests/integration/test_simulation.py expects
each to fail (xfail, strict) until the fix lands; then it passes, the strict xfail turns red, and
whoever landed the fix moves the breakage's features into options.CI_BASELINE and the name into
FIXED. Seeds depend on the sim's step choice: re-find them with `python -m tests.sim.hunt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.sim import options as opt


@dataclass(frozen=True)
class Breakage:
    name: str
    adds: frozenset[str]  # features on top of the CI baseline that provoke it
    invariant: str  # the invariant that fires
    what: str

    def options(self) -> opt.SimOptions:
        return opt.SimOptions().with_features(opt.CI_BASELINE | self.adds)


BREAKAGES: tuple[Breakage, ...] = (
    Breakage("late_create_duplicate", frozenset({"late_creates"}), "duplicate",
             "a create that lands after the client gave up is posted again: the absent grace "
             "counts from the start of the create and one empty list is taken as proof"),
    Breakage("late_create_cancel", frozenset({"late_creates"}), "cancel",
             "a job cancelled while submitting ends cancelled_locally on an early 'absent' "
             "verdict; the create lands later and that remote job never gets a cancel"),
    Breakage("list_lag_duplicate", frozenset({"list_lag"}), "duplicate",
             "a lost create reply plus a lagging list: the reconcile list does not show the job "
             "yet, the job is requeued and created a second time"),
    Breakage("burst_limit", frozenset({"bursts"}), "limit",
             "planning rounds in quick succession: a planned create is not counted until its "
             "'submitting' row commits, so the next round submits past the limit"),
    Breakage("model_spelling_limit", frozenset({"model_spellings"}), "limit",
             "per_base_model limits keyed by spelling: publishers/google/models/X and X are "
             "two scopes, so jobs in one spelling ignore the other's limit"),
    Breakage("create_denied_lost", frozenset({"create_denied"}), "lost",
             "a project-wide 403/404 on create (role or API switched off for a while) fails "
             "every queued job of that project as rejected"),
    Breakage("get_not_found_lost", frozenset({"get_not_found"}), "tracking",
             "one GET answering 404 marks the job failed (remote_lost) at once while the remote "
             "job runs on"),
    Breakage("bad_place_wedge", frozenset({"bad_places"}), "action_failed",
             "a job for a place Vertex refuses (US-Central1, 'proj a'): the client raises "
             "InvalidArgument, the create counts as unknown outcome and every reconcile raises; "
             "the job stays submitting for ever and holds a slot"),
)

# Smallest seed showing each breakage, found by the hunt (limit 300) with the sim of commit
# 8be3f10 on the engine of 4c2c3e6 (with the emu-faults emulator), where the CI baseline was
# crashes,clock_jumps,limit_changes,bad_specs,errors,lost_replies,reply_resets,timeouts,garbled.
# Replay one exactly there (checked: all eight break as noted):
#   git archive 8be3f10 | tar -x -C DIR && cd DIR &&
#   PYTHONPATH=. python -m tests.sim --seed 14 --features <that baseline>,bursts -v
SEEDS: dict[str, int] = {
    "late_create_duplicate": 0,  # job j0015 has 2 remote jobs (RUNNING, PENDING)
    "late_create_cancel": 26,  # j0004 cancelled while queued (after an early absent verdict)
    "list_lag_duplicate": 4,  # job j0029 has 2 remote jobs (RUNNING, PENDING)
    "burst_limit": 14,  # 4 remote active jobs in scope global, limit 3
    "model_spelling_limit": 21,  # 2 remote active jobs in scope model gemini-2.0-flash-001, limit 1
    "create_denied_lost": 2,  # valid job j0003 ended failed (rejected): permission denied
    "get_not_found_lost": 0,  # j0016 ended failed (remote_lost), its remote job runs on
    "bad_place_wedge": 5,  # reconcile ['j0004'] raised InvalidArgument: invalid project 'proj a'
}

# Breakages whose fix has landed: their seeds must pass (plain regression tests from then on).
# All eight pass on main 615a990 (58cd08c and the commits after it), and their features are in
# options.CI_BASELINE. A new breakage goes into BREAKAGES and SEEDS, not here, until its fix.
FIXED: frozenset[str] = frozenset(b.name for b in BREAKAGES)
