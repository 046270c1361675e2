"""Several instances on one shared store: one leader runs the engine, standbys serve the API,
a crashed or paused leader is replaced and exactly-once holds (real HTTP, real concurrency)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from engine_harness import LOCATION, PROJECT, emulator_config, open_harness, settings, spec
from ha_cluster import Cluster, eventually, open_cluster
from structlog.testing import capture_logs

from tuningd.config_ha import HaSettings
from tuningd.core.model import LocalState
from tuningd.service.engine import Engine

# A 1 s lease tried every 0.1 s: a crashed leader is replaced within about 1.1 s.
HA = HaSettings(lease_ttl_s=1.0, acquire_interval_s=0.1, fence_margin_s=0.3)
EMULATOR = emulator_config(pending_seconds=0.2, job_seconds=0.6, cancel_seconds=0.1)


class ManualMonotonic:
    """An instance's own monotonic clock, frozen unless the test moves it (a paused process)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """Three instances on one memory store and one emulator, on real clocks."""
    async with open_cluster(HA, settings(max_active=2, initial_s=0.1, max_interval_s=0.5,
                                         request_timeout_s=1.0, list_lag_s=0.0,
                                         absent_confirmations=2, confirm_spacing_s=0.2,
                                         not_found_confirm_s=0.2), EMULATOR) as c:
        for name in ("a", "b", "c"):
            await c.add(name)
        yield c


async def _all_terminal(cluster: Cluster, ids: list[str]) -> bool:
    return all([(await cluster.job(i)).state.is_terminal for i in ids])


async def test_a_crashed_leader_is_replaced_and_every_job_runs_once(cluster: Cluster) -> None:
    """Jobs created through all three instances run exactly once within the limit while the
    leader crashes mid-load (no release): another instance leads within the lease, picks up
    what was in flight, and every job ends succeeded with one remote job."""
    first = await cluster.leader()
    ids = []
    for n in range(9):
        instance = cluster.instances[n % 3]
        ids.append((await instance.create(f"req-{n}"))["name"].rsplit("/", 1)[-1])

    async def some_created() -> bool:
        return len(cluster.emulator.state.jobs) >= 2
    await eventually(some_created, what="the first creates")
    killed_at = time.monotonic()
    await first.kill()
    second = await cluster.leader()
    failover_s = time.monotonic() - killed_at
    assert second is not first
    # Within one lease plus one acquire interval (and scheduling slack), not a benchmark.
    assert failover_s < HA.lease_ttl_s + HA.acquire_interval_s + 2.0
    for n in range(9, 12):
        survivor = [i for i in cluster.instances if i is not first][n % 2]
        ids.append((await survivor.create(f"req-{n}"))["name"].rsplit("/", 1)[-1])

    await eventually(lambda: _all_terminal(cluster, ids), timeout_s=60, what="every job ended")
    assert [(await cluster.job(i)).state for i in ids] == [LocalState.SUCCEEDED] * 12
    assert [len(cluster.remote_for(i)) for i in ids] == [1] * 12
    assert cluster.emulator.state.max_active <= 2
    assert first.metrics.registry.get_sample_value("tuningd_leader") == 0
    # The lease may move again between the survivors when the machine is loaded (a 1 s lease):
    # what holds is one leader among them, never two.
    survivors = [i for i in cluster.instances if i is not first]

    async def one_leader() -> bool:
        flags = [i.metrics.registry.get_sample_value("tuningd_leader") for i in survivors]
        return sorted(flags) == [0, 1]
    await eventually(one_leader, what="exactly one surviving leader")


async def test_a_create_on_a_standby_reaches_the_leader_through_the_feed(
        cluster: Cluster) -> None:
    """A job posted to a standby is stored there and submitted by the leader at once (the
    leader rereads the store only when the change feed tells it)."""
    leader = await cluster.leader()
    standby = next(i for i in cluster.instances if i is not leader)
    job_id = (await standby.create("from-standby"))["name"].rsplit("/", 1)[-1]

    async def created() -> bool:
        return len(cluster.remote_for(job_id)) == 1
    await eventually(created, what="the leader's create")
    await eventually(lambda: _all_terminal(cluster, [job_id]), what="the job's end")
    assert (await cluster.job(job_id)).state is LocalState.SUCCEEDED
    history = [e.reason for e in await cluster.store.history(job_id)]
    assert history[0] == "accepted" and len(cluster.remote_for(job_id)) == 1


async def test_a_cancel_on_a_standby_is_carried_out_by_the_leader(cluster: Cluster) -> None:
    """A cancel posted to a standby is stored as the job's cancel intent; the leader cancels
    the remote job and the job ends cancelled."""
    leader = await cluster.leader()
    standby = next(i for i in cluster.instances if i is not leader)
    job_id = (await leader.create("to-cancel"))["name"].rsplit("/", 1)[-1]

    async def created() -> bool:
        return len(cluster.remote_for(job_id)) == 1
    await eventually(created, what="the create")
    await standby.cancel(job_id)
    await eventually(lambda: _all_terminal(cluster, [job_id]), what="the cancel")
    job = await cluster.job(job_id)
    assert job.state is LocalState.CANCELLED and job.cancel_requested
    [remote] = cluster.remote_for(job_id)
    assert remote.state.name == "JOB_STATE_CANCELLED"


async def test_standby_answers_reads_creates_and_readyz() -> None:
    """Without the lease an instance serves the whole API: /readyz ready with its role and
    the leader's name, a create is idempotent by requestId, reads come from the store."""
    async with open_cluster(HA, settings(), EMULATOR) as cluster:
        leader = await cluster.add("a")
        await cluster.leader()
        standby = await cluster.add("b")
        async with cluster.session.get(standby.url("/readyz")) as resp:
            body = await resp.json()
        assert resp.status == 200
        assert body["instance"] == {"role": "standby", "instance_id": "b", "epoch": None,
                                    "leader": "a", "leader_epoch": 1}
        first = await standby.create("same")
        again = await standby.create("same")
        assert first["name"] == again["name"]
        async with cluster.session.get(leader.url("/readyz")) as resp:
            assert (await resp.json())["instance"]["role"] == "leader"


async def test_a_paused_former_leader_is_fenced_and_stops() -> None:
    """A leader paused past its lease (its own clock frozen, so it still believes it leads)
    wakes up after another instance took over: its first write raises Fenced, nothing of it is
    stored, its engine stops at once, and the create it was serving is stored as a standby's."""
    store_clock = ManualMonotonic()
    ha = HaSettings(lease_ttl_s=30.0, acquire_interval_s=0.05, fence_margin_s=1.0)
    async with open_cluster(ha, settings(), EMULATOR, store_clock=store_clock) as cluster:
        paused = await cluster.add("a", monotonic=ManualMonotonic())
        assert await cluster.leader() is paused
        other = await cluster.add("b")
        store_clock.t += 31.0  # a's lease runs out by the store's clock; a saw no time pass

        async def b_leads() -> bool:
            return other.leading
        await eventually(b_leads, what="b taking over")
        assert paused.leading  # it does not know yet
        with capture_logs() as logs:
            job_id = (await paused.create("while-paused"))["name"].rsplit("/", 1)[-1]
        assert not paused.leading and paused.leadership.engine is None
        events = [e["event"] for e in logs]
        assert "leader.fenced" in events and "leader.lost" in events
        assert paused.metrics.registry.get_sample_value("tuningd_leader_changes_total") == 2
        [accepted] = await cluster.store.history(job_id)
        assert accepted.reason == "accepted"

        async def created() -> bool:
            return len(cluster.remote_for(job_id)) == 1
        await eventually(created, what="the new leader's create")


async def test_a_leader_whose_own_clock_passed_the_fence_stops_before_any_create() -> None:
    """When a leader's own clock says its last good renew is older than ttl - margin, it asks
    no create of Vertex and stops; the job's open attempt is reconciled by the next leader,
    which creates it exactly once."""
    mono = ManualMonotonic()
    async with open_cluster(HA, settings(request_timeout_s=1.0, list_lag_s=0.0,
                                         absent_confirmations=2, confirm_spacing_s=0.2),
                            EMULATOR) as cluster:
        stale = await cluster.add("a", monotonic=mono)
        assert await cluster.leader() is stale
        mono.t += HA.fence_after_s + 0.01
        assert stale.leadership.lease_valid() is False
        assert not stale.leading
        await cluster.add("b")
        job_id = (await stale.create("after-fence"))["name"].rsplit("/", 1)[-1]
        await eventually(lambda: _all_terminal(cluster, [job_id]), timeout_s=30,
                         what="the job's end")
        assert (await cluster.job(job_id)).state is LocalState.SUCCEEDED
        assert len(cluster.remote_for(job_id)) == 1


async def test_an_engine_whose_lease_is_not_valid_sends_no_create(tmp_path: Path) -> None:
    """With `may_create` saying no, a planned create writes its intent but is never sent: the
    job stays submitting with its attempt open, for the next leader to reconcile."""
    async with open_harness(tmp_path, store="memory") as h:
        engine = Engine(h.store, h.vertex, h.settings, clock=h.clock.now,
                        may_create=lambda: False, shared=True)
        await engine.start()
        job, _ = await engine.submit(PROJECT, LOCATION, spec())
        with capture_logs() as logs:
            await engine.step()
        stored = await h.job(job.id)
        assert stored.state is LocalState.SUBMITTING and stored.attempt_ended_at is None
        assert h.requests("create") == 0
        assert "leader.create_withheld" in [e["event"] for e in logs]


async def test_a_leader_stopping_cleanly_hands_over_at_once() -> None:
    """A leader told to stop drains its engine and releases the lease: a standby leads at once,
    with no wait for the lease to run out (the store's clock never moves here)."""
    store_clock = ManualMonotonic()
    ha = HaSettings(lease_ttl_s=30.0, acquire_interval_s=0.05, fence_margin_s=1.0)
    async with open_cluster(ha, settings(), EMULATOR, store_clock=store_clock) as cluster:
        first = await cluster.add("a")
        assert await cluster.leader() is first
        second = await cluster.add("b")
        first.stop.set()
        assert first.task is not None
        await first.task
        assert await cluster.leader() is second
        assert first.leadership.draining and not first.leading
        lease = await cluster.store.current()
        assert lease is not None and (lease.holder, lease.epoch) == ("b", 2)
