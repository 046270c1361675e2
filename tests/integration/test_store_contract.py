"""The JobStore contract (tuningd.ports): every store (SQLite, memory, PostgreSQL) passes these
same tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path

import pytest

from tests.integration.store_jobs import full_job, insert_job, make_job
from tuningd.adapters.memory import MemoryStore
from tuningd.adapters.sqlite.store import Store
from tuningd.core import errors
from tuningd.core.model import Job, LocalState, Outcome
from tuningd.ports import JobStore, StaleWrite, page_key


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """Each kind of store, fresh and empty (PostgreSQL: a new database of the test cluster)."""
    s: JobStore
    if request.param == "sqlite":
        s = await Store.open(tmp_path / "tuningd.db")
    elif request.param == "postgres":
        from tuningd.adapters.postgres import PostgresStore

        s = await PostgresStore.open(request.getfixturevalue("pg_url"))
    else:
        s = await MemoryStore.open()
    try:
        yield s
    finally:
        await s.close()


# ----- round trips, transitions and events -----

async def test_round_trip_every_field(store: JobStore) -> None:
    """Every Job field comes back exactly: floats bit for bit, None, bools and enums typed."""
    full, plain = full_job(), make_job()
    await insert_job(store, full, "accepted")
    await insert_job(store, plain, "accepted")
    got_full, got_plain = await store.get(full.id), await store.get(plain.id)
    assert got_full == full and got_plain == plain
    assert got_full is not None and got_plain is not None
    for f in fields(Job):
        assert type(getattr(got_full, f.name)) is type(getattr(full, f.name)), f.name
    assert isinstance(got_full.state, LocalState)
    assert got_full.outcome is Outcome.COMPLETED_DESPITE_CANCEL
    assert got_full.cancel_requested is True and got_plain.cancel_requested is False
    assert got_plain.request_id is None and got_plain.ended_at is None
    assert await store.get("nope") is None


async def test_int_times_are_stored_as_floats(store: JobStore) -> None:
    """An int passed for a float field comes back as an equal float."""
    job = make_job(created_at=1_700_000_000, updated_at=5, next_action_at=7)
    await insert_job(store, job, "accepted")
    got = await store.get(job.id)
    assert got == job and got is not None and isinstance(got.next_action_at, float)


async def test_insert_writes_first_event(store: JobStore) -> None:
    """insert_job stores the job and a None -> queued event at created_at."""
    job = make_job()
    assert await insert_job(store, job, "accepted") == job
    [event] = await store.history(job.id)
    assert (event.job_id, event.seq, event.from_state, event.to_state, event.reason) == (
        job.id, 1, None, LocalState.QUEUED, "accepted")
    assert event.at == job.created_at and dict(event.detail) == {}


async def test_apply_writes_row_and_event(store: JobStore) -> None:
    """apply() stores the new row and an event with detail; history is in order."""
    job = make_job()
    await insert_job(store, job, "accepted")
    steps = [
        (LocalState.SUBMITTING, "submit", {"attempt": 1}),
        (LocalState.PENDING, "created", {"name": "projects/1/locations/l/tuningJobs/2"}),
        (LocalState.RUNNING, "polled", None),
        (LocalState.SUCCEEDED, "polled", {"nested": {"list": [1, 2.5, None, True]}}),
    ]
    current = job
    for i, (state, reason, detail) in enumerate(steps, start=1):
        nxt = current.evolve(state=state, updated_at=job.updated_at + i)
        await store.apply(current, nxt, reason, detail)
        current = nxt
    assert await store.get(job.id) == current
    history = await store.history(job.id)
    assert [e.seq for e in history] == [1, 2, 3, 4, 5]
    assert [e.to_state for e in history] == [LocalState.QUEUED] + [s for s, _, _ in steps]
    assert [e.from_state for e in history] == [None, LocalState.QUEUED, LocalState.SUBMITTING,
                                               LocalState.PENDING, LocalState.RUNNING]
    assert [e.at for e in history] == [job.created_at] + [job.updated_at + i for i in range(1, 5)]
    assert dict(history[4].detail) == {"nested": {"list": [1, 2.5, None, True]}}
    assert dict(history[3].detail) == {}


async def test_apply_same_state_still_records_event(store: JobStore) -> None:
    """A transition that keeps the state (cancel intent while submitting) is still history."""
    job = make_job(state=LocalState.SUBMITTING)
    await insert_job(store, job, "accepted")
    after = job.evolve(cancel_requested=True, updated_at=job.updated_at + 1)
    await store.apply(job, after, "cancel_requested")
    history = await store.history(job.id)
    assert [(e.from_state, e.to_state, e.reason) for e in history][-1] == (
        LocalState.SUBMITTING, LocalState.SUBMITTING, "cancel_requested")


async def test_apply_with_stale_before_changes_nothing(store: JobStore) -> None:
    """apply() refuses a `before` that no longer matches the row and writes no event."""
    job = make_job()
    await insert_job(store, job, "accepted")
    moved = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    await store.apply(job, moved, "submit")
    with pytest.raises(StaleWrite):
        await store.apply(job, job.evolve(state=LocalState.CANCELLED), "cancel")
    with pytest.raises(StaleWrite):
        await store.apply(make_job(99), make_job(99, state=LocalState.FAILED), "x")
    assert await store.get(job.id) == moved
    assert len(await store.history(job.id)) == 2


async def test_unserializable_detail_writes_nothing(store: JobStore) -> None:
    """A detail that is not JSON is refused before anything is written."""
    job = make_job()
    await insert_job(store, job, "accepted")
    with pytest.raises(TypeError):
        await store.apply(job, job.evolve(state=LocalState.SUBMITTING), "x", {"bad": object()})
    assert await store.get(job.id) == job


async def test_update_job_has_no_event_and_keeps_state(store: JobStore) -> None:
    """update_job() stores bookkeeping fields without an event and refuses state changes."""
    job = make_job(state=LocalState.RUNNING)
    await insert_job(store, job, "accepted")
    polled = job.evolve(next_action_at=123.5, poll_interval_s=60.0, retry_count=1,
                        remote_json='{"state": "JOB_STATE_RUNNING"}', last_error_code=14,
                        last_error_message="read timed out", last_error_at=120.25)
    await store.update_job(polled)
    assert await store.get(job.id) == polled
    assert len(await store.history(job.id)) == 1
    with pytest.raises(StaleWrite):
        await store.update_job(polled.evolve(state=LocalState.SUCCEEDED))
    with pytest.raises(StaleWrite):
        await store.update_job(make_job(42))
    assert await store.get(job.id) == polled


async def test_duplicate_job_id_refused(store: JobStore) -> None:
    """Inserting a second job with an existing local id is AlreadyExists, not an overwrite."""
    job = make_job()
    await insert_job(store, job, "accepted")
    with pytest.raises(errors.AlreadyExists):
        await insert_job(store, job.evolve(display_name="other"), "accepted")
    assert await store.get(job.id) == job
    assert len(await store.history(job.id)) == 1


async def test_request_id_is_idempotent_per_project_and_location(store: JobStore) -> None:
    """A repeated request_id in the same project/location returns the first job, no new rows."""
    first = make_job(1, request_id="r1")
    again = make_job(2, request_id="r1", display_name="second try")
    other_location = make_job(3, request_id="r1", location="europe-west4")
    other_project = make_job(4, request_id="r1", project="p2")
    assert await store.create_or_get(first, "accepted") == (first, True)
    assert await store.create_or_get(again, "accepted") == (first, False)
    assert await insert_job(store, again, "accepted") == first
    assert await store.create_or_get(other_location, "accepted") == (other_location, True)
    assert await store.create_or_get(other_project, "accepted") == (other_project, True)
    assert await store.get(again.id) is None
    assert len(await store.history(first.id)) == 1
    assert await store.get_by_request_id("p1", "us-central1", "r1") == first
    assert await store.get_by_request_id("p1", "europe-west4", "r1") == other_location
    assert await store.get_by_request_id("p1", "us-central1", "r2") is None


async def test_concurrent_creates_with_same_request_id_make_one_job(store: JobStore) -> None:
    """Many coroutines racing the same request_id end with exactly one job."""
    results = await asyncio.gather(*(
        store.create_or_get(make_job(i, request_id="same"), "accepted") for i in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert sum((await store.count_by_state()).values()) == 1


async def test_active_and_queued_and_count_by_state(store: JobStore) -> None:
    """active_and_queued() returns exactly the non-terminal jobs; count_by_state counts all."""
    states = [*LocalState, LocalState.QUEUED, LocalState.SUCCEEDED, LocalState.SUCCEEDED]
    for i, state in enumerate(states):
        await insert_job(store, make_job(i, state=state), "accepted")
    active = await store.active_and_queued()
    assert sorted(j.state for j in active) == sorted(s for s in states if not s.is_terminal)
    assert [j.created_at for j in active] == sorted(j.created_at for j in active)
    counts = await store.count_by_state()
    assert set(counts) == set(LocalState)
    assert counts[LocalState.QUEUED] == 2 and counts[LocalState.SUCCEEDED] == 3
    assert counts[LocalState.RUNNING] == 1 and sum(counts.values()) == len(states)


async def test_keyset_pagination(store: JobStore) -> None:
    """Pages walk all jobs newest first without gaps or repeats, ties broken by id."""
    jobs = [make_job(i, created_at=1000.0 + i // 3) for i in range(11)]  # groups of equal times
    jobs.append(make_job(50, project="other"))
    for job in jobs:
        await insert_job(store, job, "accepted")
    expected = sorted((j for j in jobs if j.project == "p1"),
                      key=lambda j: (j.created_at, j.id), reverse=True)
    seen: list[Job] = []
    key: str | None = None
    pages = 0
    while True:
        page, key = await store.list_page("p1", "us-central1", after_key=key, limit=4)
        seen.extend(page)
        pages += 1
        if key is None:
            break
    assert seen == expected and pages == 3
    manual = await store.list_jobs("p1", "us-central1", limit=4)
    assert manual == expected[:4]
    rest = await store.list_jobs("p1", "us-central1", after_key=page_key(manual[-1]), limit=100)
    assert rest == expected[4:]
    assert len(await store.list_jobs(limit=100)) == 12
    assert await store.list_jobs("p1", "europe-west4") == []


async def test_list_filters_by_state(store: JobStore) -> None:
    """A states filter returns only jobs in those states, still newest first."""
    for i, state in enumerate([LocalState.QUEUED, LocalState.RUNNING, LocalState.FAILED,
                               LocalState.RUNNING]):
        await insert_job(store, make_job(i, state=state), "accepted")
    got = await store.list_jobs("p1", "us-central1", states={LocalState.RUNNING})
    assert [j.id for j in got] == ["job000003", "job000001"]
    assert len(await store.list_jobs("p1", "us-central1", states=[])) == 4


async def test_bad_page_key_and_limit(store: JobStore) -> None:
    """A malformed page key or a limit below 1 is InvalidArgument."""
    with pytest.raises(errors.InvalidArgument):
        await store.list_jobs(after_key="garbage")
    with pytest.raises(errors.InvalidArgument):
        await store.list_jobs(after_key="abc|job1")
    with pytest.raises(errors.InvalidArgument):
        await store.list_jobs(limit=0)


async def test_list_by_label_and_state_uses_pages(store: JobStore) -> None:
    """labels= and states= filters page newest first like the unfiltered list."""
    for n in range(1, 31):
        spec = '{"labels": {"team": "%s", "n": 1}}' % ("a" if n % 3 else "b")
        state = LocalState.FAILED if n % 2 else LocalState.QUEUED
        await insert_job(store, make_job(n, spec_json=spec, state=state), "accepted")
    want = [make_job(n).id for n in range(30, 0, -1) if n % 3]
    got: list[str] = []
    key = None
    while True:
        page, key = await store.list_page("p1", "us-central1", labels={"team": "a"},
                                          after_key=key, limit=7)
        got.extend(j.id for j in page)
        if key is None:
            break
    assert got == want
    both = await store.list_jobs("p1", "us-central1", states={LocalState.FAILED},
                                 labels={"team": "b"})
    assert [j.id for j in both] == [make_job(n).id for n in (27, 21, 15, 9, 3)]
    assert await store.list_jobs("p1", "us-central1", labels={"n": "1"}) == []
    assert len(await store.list_jobs(labels={"team": "b"})) == 10


async def test_apply_writes_notes_before_the_transition(store: JobStore) -> None:
    """apply()'s notes are history lines in the old state, written before the transition's."""
    job = make_job()
    await insert_job(store, job, "accepted")
    after = job.evolve(state=LocalState.SUBMITTING, updated_at=job.updated_at + 1)
    await store.apply(job, after, "submit", notes=("store error, retried",))
    history = await store.history(job.id)
    assert [(e.seq, e.from_state, e.to_state, e.reason) for e in history[1:]] == [
        (2, LocalState.QUEUED, LocalState.QUEUED, "store error, retried"),
        (3, LocalState.QUEUED, LocalState.SUBMITTING, "submit")]
    later = after.evolve(updated_at=after.updated_at + 1)
    await store.apply(after, later, None, notes=("only a note",))
    assert [e.reason for e in await store.history(job.id)][-1] == "only a note"
    assert await store.get(job.id) == later


async def test_apply_refuses_two_different_jobs(store: JobStore) -> None:
    """apply() with a `before` and `after` of different ids is a ValueError and writes nothing."""
    job = make_job()
    await insert_job(store, job, "accepted")
    with pytest.raises(ValueError, match="two different jobs"):
        await store.apply(job, make_job(2), "x")
    assert await store.get(job.id) == job and await store.get(make_job(2).id) is None


async def test_places_lists_every_scope_once(store: JobStore) -> None:
    """places() is every (project, location) that ever had a job, sorted, each once."""
    assert await store.places() == []
    for n, (project, location) in enumerate([("p2", "us-central1"), ("p1", "europe-west4"),
                                             ("p2", "us-central1"), ("p1", "us-central1")]):
        await insert_job(store, make_job(n, project=project, location=location,
                                        state=LocalState.SUCCEEDED), "accepted")
    assert await store.places() == [("p1", "europe-west4"), ("p1", "us-central1"),
                                    ("p2", "us-central1")]


async def test_closed_store_refuses_writes(store: JobStore) -> None:
    """Once closed, check_writable() is False, writes are StoreError, and close() is idempotent."""
    assert await store.check_writable() is True
    await store.close()
    assert await store.check_writable() is False
    with pytest.raises(errors.StoreError):
        await insert_job(store, make_job(), "accepted")
    await store.close()


async def test_what_a_reader_changes_never_reaches_the_store(store: JobStore) -> None:
    """An event's detail read back is the reader's own copy: changing it changes no history."""
    job = make_job()
    await insert_job(store, job, "accepted", {"attempt": 1})
    [first] = await store.history(job.id)
    first.detail["attempt"] = 99  # type: ignore[index]
    [again] = await store.history(job.id)
    assert dict(again.detail) == {"attempt": 1}


async def test_prune_ended_deletes_the_oldest_ended_jobs_and_nothing_else(
        store: JobStore) -> None:
    """prune_ended deletes, oldest first and at most `limit` per call, only jobs that ended
    before the cutoff, with their history and labels; unended jobs and newer ones stay, and a
    freed requestId may be used again."""
    t0 = 1_700_000_000.0
    ended = [make_job(n, state=LocalState.SUCCEEDED, ended_at=t0 + n, request_id=f"r{n}",
                      spec_json='{"labels": {"team": "nlp"}}') for n in range(1, 6)]
    running = make_job(10, state=LocalState.RUNNING)
    late = make_job(11, state=LocalState.FAILED, ended_at=t0 + 100)
    for job in (*ended, running, late):
        await store.create_or_get(job)

    assert await store.prune_ended(t0 + 50, limit=2) == 2
    assert [await store.get(j.id) for j in ended[:2]] == [None, None]
    assert await store.history(ended[0].id) == []
    assert await store.prune_ended(t0 + 50, limit=10) == 3
    assert await store.prune_ended(t0 + 50, limit=10) == 0
    left = {j.id for j in await store.list_jobs("p1", "us-central1", limit=100)}
    assert left == {running.id, late.id}
    assert await store.list_jobs("p1", "us-central1", labels={"team": "nlp"}) == []
    again, created = await store.create_or_get(make_job(20, request_id="r1"))
    assert created and again.id == make_job(20).id
    assert (await store.count_by_state())[LocalState.SUCCEEDED] == 0
    size = await store.size_bytes()
    assert size is None or size > 0


# ----- id prefixes and listing every place -----

async def test_ids_with_prefix_is_a_range_of_ids(store: JobStore) -> None:
    """ids_with_prefix answers exactly the ids starting with the prefix, in id order, at most
    `limit`, including ids next to the range's ends and with characters at the top of Unicode."""
    ids = ["ab", "ab0", "ab01", "ab~", "ab\U0010ffff", "ab\U0010ffffz", "ac", "aa\U0010ffff",
           "b", "abc-1", "abc.1", "abd"]
    for n, job_id in enumerate(ids):
        await insert_job(store, make_job(n, id=job_id), "accepted")
    assert await store.ids_with_prefix("ab", 100) == sorted(i for i in ids if i.startswith("ab"))
    assert await store.ids_with_prefix("ab", 2) == ["ab", "ab0"]
    assert await store.ids_with_prefix("abc-", 100) == ["abc-1"]
    assert await store.ids_with_prefix("ab\U0010ffff", 100) == ["ab\U0010ffff", "ab\U0010ffffz"]
    assert await store.ids_with_prefix("aa", 100) == ["aa\U0010ffff"]
    assert await store.ids_with_prefix("zz", 100) == []
    with pytest.raises(errors.InvalidArgument):
        await store.ids_with_prefix("", 10)
    with pytest.raises(errors.InvalidArgument):
        await store.ids_with_prefix("a", 0)


async def test_list_pages_across_every_project_and_location(store: JobStore) -> None:
    """project and location None list every place's jobs newest first, page by page without
    gaps or repeats; one of them None lists every value of it."""
    places = [("p1", "us-central1"), ("p2", "us-central1"), ("p1", "europe-west4"),
              ("p3", "asia-east1")]
    jobs = [make_job(i, project=places[i % 4][0], location=places[i % 4][1],
                     created_at=1000.0 + i // 2) for i in range(13)]
    for job in jobs:
        await insert_job(store, job, "accepted")
    expected = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)
    seen: list[Job] = []
    key: str | None = None
    while True:
        page, key = await store.list_page(None, None, after_key=key, limit=5)
        seen.extend(page)
        if key is None:
            break
    assert seen == expected
    assert await store.list_jobs("p1", None, limit=100) == [j for j in expected
                                                            if j.project == "p1"]
    assert await store.list_jobs(None, "us-central1", limit=100) == [
        j for j in expected if j.location == "us-central1"]
