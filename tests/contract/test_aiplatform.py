"""The Vertex AI SDK (vertexai.tuning.sft, REST transport, int enums) against the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import vertexai
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from vertexai.tuning import sft

from tuningd.emulator import EmulatorConfig, Faults, ManualClock, ThreadedEmulator

pytestmark = pytest.mark.contract

TRAIN = "gs://my-bucket/sft/train.jsonl"


@pytest.fixture
def small_pages() -> Iterator[ThreadedEmulator]:
    """An emulator whose default page size is 2, so the SDK's own pager must follow tokens."""
    config = EmulatorConfig(pending_seconds=1, job_seconds=10, default_page_size=2, seed=2)
    with ThreadedEmulator(config, clock=ManualClock()) as emu:
        yield emu


def init(emu: ThreadedEmulator) -> None:
    vertexai.init(project="my-proj", location="us-central1", api_endpoint=emu.url,
                  api_transport="rest", credentials=AnonymousCredentials())


def test_train_poll_succeed(emulator: ThreadedEmulator) -> None:
    """sft.train creates a job (int enums on the wire); refresh reaches SUCCEEDED with a model."""
    init(emulator)
    job = sft.train(source_model="gemini-2.5-flash", train_dataset=TRAIN, epochs=3,
                    adapter_size=4, tuned_model_display_name="contract",
                    labels={"local-id": "abc-123"})
    assert job.resource_name.startswith("projects/123456789012/locations/us-central1/")
    assert not job.has_ended
    sent = emulator.snapshot()["jobs"][0]["request"]
    assert sent["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == 2  # int enum
    emulator.advance(100)
    job.refresh()
    assert job.has_ended and job.has_succeeded
    assert job.tuned_model_name.endswith("@1")
    assert job.tuned_model_endpoint_name.startswith("projects/123456789012/")


def test_list_follows_pages_and_filters(small_pages: ThreadedEmulator) -> None:
    """SupervisedTuningJob.list walks every page and passes a label filter through."""
    init(small_pages)
    names = []
    for i in range(5):
        job = sft.train(source_model="gemini-2.5-flash", train_dataset=TRAIN,
                        labels={"batch": "x" if i < 3 else "y"})
        names.append(job.resource_name)
        small_pages.advance(1)
    listed = [j.resource_name for j in sft.SupervisedTuningJob.list()]
    assert sorted(listed) == sorted(names)
    filtered = [j.resource_name for j in sft.SupervisedTuningJob.list(filter="labels.batch=y")]
    assert sorted(filtered) == sorted(names[3:])
    counts = small_pages.snapshot()["requestCounts"]["list"]
    assert counts == {"200": 4}  # 3 pages for five jobs at 2 per page, 1 for the two "y"


def test_cancel_to_cancelled(emulator: ThreadedEmulator) -> None:
    """cancel() moves the job through CANCELLING to CANCELLED with error code 1."""
    init(emulator)
    job = sft.train(source_model="gemini-2.5-flash", train_dataset=TRAIN)
    job.cancel()
    emulator.advance(1)
    job.refresh()
    assert job.has_ended and not job.has_succeeded
    assert job.state.name == "JOB_STATE_CANCELLED"
    assert job.error.code == 1


def test_documented_errors(emulator: ThreadedEmulator) -> None:
    """400 validation, 404, FAILED_PRECONDITION on cancel and 429 map to api_core exceptions."""
    init(emulator)
    with pytest.raises(exceptions.BadRequest) as bad:
        sft.train(source_model="gemini-9-ultra", train_dataset=TRAIN)
    assert "not supported for tuning" in str(bad.value)
    with pytest.raises(exceptions.NotFound):
        sft.SupervisedTuningJob(
            "projects/123456789012/locations/us-central1/tuningJobs/1234567890123456789")
    job = sft.train(source_model="gemini-2.5-flash", train_dataset=TRAIN)
    emulator.advance(100)
    with pytest.raises(exceptions.BadRequest) as ended:
        job.cancel()
    assert "FAILED_PRECONDITION" in str(ended.value) or "Cannot cancel" in str(ended.value)

    def quota() -> None:
        emulator.state.faults = Faults(error_rates={"create": 1.0},
                                       error_statuses={"create": 429})
    emulator.call(quota)
    with pytest.raises(exceptions.TooManyRequests):
        sft.train(source_model="gemini-2.5-flash", train_dataset=TRAIN)
