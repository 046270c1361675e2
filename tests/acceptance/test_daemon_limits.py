"""Acceptance: parallel POSTs to the real daemon never put more jobs on Vertex than the limits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import Processes, job_body, job_id_of, wait_until

pytestmark = pytest.mark.acceptance

N_POSTS = 20


@pytest.mark.parametrize("max_active", [1, 5])
def test_parallel_posts_never_exceed_max_active(procs: Processes, tmp_path: Path,
                                                max_active: int) -> None:
    """20 POSTs at once, while creates take 0.2 s each, leave exactly max_active jobs active on
    Vertex (a create under way counts against the limit before its `submitting` is stored:
    breakage 3 of issue 7 had 3 and 11 here)."""
    emu = procs.emulator(job_seconds=3600, pending_seconds=0.2, max_concurrent=N_POSTS,
                         extra=["--latency", "0.2"])
    daemon = procs.daemon(emu.url, {"limits": {"max_active": max_active}})

    with ThreadPoolExecutor(N_POSTS) as pool:
        ids = list(pool.map(lambda i: job_id_of(daemon.submit(job_body(f"par-{i}"))),
                            range(N_POSTS)))

    def settled() -> bool:
        jobs = {j["name"].rsplit("/", 1)[-1]: j for j in daemon.list_all()}
        local = [jobs[i]["tuningd"]["state"] for i in ids]
        return (local.count("queued") == N_POSTS - max_active
                and sum(s in ("pending", "running") for s in local) == max_active)

    wait_until(settled, 30, message="the daemon to fill its slots")
    state = emu.state()
    assert len(state["jobs"]) == max_active
    assert state["maxActive"] == max_active
