"""Jobs for store tests: a plain one by number, and one with every field set awkwardly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuningd.core.model import Job, LocalState, Outcome
from tuningd.ports import JobStore


def make_job(n: int = 1, **changes: object) -> Job:
    base = Job(
        id=f"job{n:06d}",
        project="p1",
        location="us-central1",
        spec_json='{"baseModel": "gemini-2.0-flash-001"}',
        base_model="gemini-2.0-flash-001",
        state=LocalState.QUEUED,
        created_at=1_700_000_000.0 + n,
        updated_at=1_700_000_000.0 + n,
    )
    return base.evolve(**changes)


def full_job() -> Job:
    """A job where every field differs from its default, with awkward values."""
    return Job(
        id="j-full",
        project="proj-x",
        location="europe-west4",
        spec_json='{"labels": {"a": "b"}, "x": "\\u00e9\\u4e2d"}',
        base_model="gemini-2.5-pro",
        state=LocalState.CANCELLING,
        created_at=1_700_000_000.123456789,
        updated_at=0.1 + 0.2,
        priority=-7,
        request_id="req-é-1",
        display_name="My \"job\"\n",
        attempts=3,
        remote_name="projects/123/locations/europe-west4/tuningJobs/987",
        remote_state="JOB_STATE_RUNNING",
        remote_substate="TUNING_JOB_STATE_TUNING",
        remote_json='{"name": "projects/123/locations/europe-west4/tuningJobs/987"}',
        cancel_requested=True,
        cancel_sent_at=1e-300,
        next_action_at=1.7976931348623157e308,
        poll_interval_s=2.5,
        retry_count=2**40,
        submit_started_at=1_700_000_001.5,
        submitted_at=1_700_000_002.25,
        ended_at=1_700_000_003.0,
        error_code=9,
        error_message="FAILED_PRECONDITION: ünïcode",
        outcome=Outcome.COMPLETED_DESPITE_CANCEL,
        remote_update_time="2024-05-01T10:00:00.123456Z",
        attempt_ended_at=1_700_000_001.75,
        absent_checks=2,
        missing_checks=1,
        api_version="v1beta1",
        last_error_code=16,
        last_error_message="no usable Google credentials: ünïcode\n",
        last_error_at=1_700_000_001.625,
    )


async def insert_job(store: JobStore, job: Job, reason: str = "accepted",
                     detail: Mapping[str, Any] | None = None) -> Job:
    """create_or_get, returning only the stored job (the existing one on a request_id hit)."""
    stored, _ = await store.create_or_get(job, reason, detail)
    return stored
