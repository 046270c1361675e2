"""Emulator gcs_root dataset checks: real stats for good JSONL, FAILED jobs naming the bad line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock

PARENT = "projects/my-proj/locations/us-central1"
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train-sample.jsonl"
SAMPLE_LINES = SAMPLE.read_text().splitlines()
GOOD = "\n".join(SAMPLE_LINES) + "\n"  # the Gemini `contents` lines
# The gemini-1.0-pro-002 `messages` format: a fixture for the validator, never an example.
LEGACY_LINE = (Path(__file__).resolve().parents[1] / "fixtures"
               / "train-legacy-messages.jsonl").read_text().strip()


@pytest.fixture
def gcs(tmp_path: Path) -> Path:
    (tmp_path / "bkt").mkdir()
    return tmp_path


def write(gcs: Path, name: str, text: str) -> str:
    (gcs / "bkt" / name).write_text(text)
    return f"gs://bkt/{name}"


async def run_job(http: aiohttp.ClientSession, gcs: Path, train_uri: str, *,
                  model: str = "gemini-2.5-flash", validation_uri: str | None = None,
                  epochs: int = 2, **cfg: Any) -> dict[str, Any]:
    """Creates a job, lets the clock run it to the end, returns the final v1 job."""
    spec: dict[str, Any] = {"trainingDatasetUri": train_uri,
                            "hyperParameters": {"epochCount": epochs}}
    if validation_uri:
        spec["validationDatasetUri"] = validation_uri
    config = EmulatorConfig(gcs_root=gcs, pending_seconds=5, job_seconds=100, **cfg)
    async with Emulator(config, clock=ManualClock()) as emu:
        async with http.post(f"{emu.url}/v1/{PARENT}/tuningJobs",
                             json={"baseModel": model, "supervisedTuningSpec": spec}) as resp:
            assert resp.status == 200, await resp.text()
            name = (await resp.json())["name"]
        emu.advance(1000)
        async with http.get(f"{emu.url}/v1/{name}") as resp:
            job: dict[str, Any] = await resp.json()
            return job


def text_chars(line: str) -> tuple[int, int, int]:
    """(input chars, output chars, turns) of a `contents` example, computed independently."""
    record = json.loads(line)
    system = sum(len(p["text"]) for p in record.get("systemInstruction", {}).get("parts", []))
    user = sum(len(p["text"]) for c in record["contents"] if c["role"] == "user"
               for p in c["parts"])
    model = sum(len(p["text"]) for c in record["contents"] if c["role"] == "model"
                for p in c["parts"])
    return system + user, model, len(record["contents"])


async def test_good_dataset_succeeds_with_real_stats(http: aiohttp.ClientSession,
                                                     gcs: Path) -> None:
    """examples/train-sample.jsonl, copied as it is, succeeds; tuningDataStats describe exactly
    that file."""
    (gcs / "bkt" / "train.jsonl").write_bytes(SAMPLE.read_bytes())
    uri = "gs://bkt/train.jsonl"
    job = await run_job(http, gcs, uri, epochs=3)
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    stats = job["tuningDataStats"]["supervisedTuningDataStats"]
    per_example = [text_chars(line) for line in SAMPLE_LINES]
    total = sum(i + o for i, o, _ in per_example)
    assert stats["tuningDatasetExampleCount"] == "4"
    assert stats["totalTuningCharacterCount"] == str(total)
    assert stats["totalBillableCharacterCount"] == str(total * 3)
    assert stats["totalBillableTokenCount"] == str(math.ceil(total * 3 / 4))
    inputs = stats["userInputTokenDistribution"]
    assert inputs["sum"] == str(sum(math.ceil(i / 4) for i, _, _ in per_example))
    assert inputs["max"] == max(math.ceil(i / 4) for i, _, _ in per_example)
    turns = stats["userMessagePerExampleDistribution"]
    assert turns["sum"] == str(sum(t for _, _, t in per_example))
    assert turns["max"] == 4
    assert stats["userDatasetExamples"][0]["role"] == "user"
    assert "totalTruncatedExampleCount" not in stats


async def test_sample_file_with_legacy_line_fails_for_gemini_2(http: aiohttp.ClientSession,
                                                                gcs: Path) -> None:
    """A legacy `messages` line after the sample, which gemini-2.5-flash rejects: the job FAILS
    with code 3 naming line 5."""
    (gcs / "bkt" / "train.jsonl").write_text(GOOD + LEGACY_LINE + "\n")
    job = await run_job(http, gcs, "gs://bkt/train.jsonl")
    assert job["state"] == "JOB_STATE_FAILED"
    assert job["error"]["code"] == 3
    assert "line 5" in job["error"]["message"]
    assert "messages" in job["error"]["message"]


async def test_failure_happens_during_processing_dataset(http: aiohttp.ClientSession,
                                                         gcs: Path) -> None:
    """A bad dataset is accepted at create and fails after the PROCESSING_DATASET phase."""
    uri = write(gcs, "bad.jsonl", "{oops\n")
    clock = ManualClock()
    config = EmulatorConfig(gcs_root=gcs, pending_seconds=5, job_seconds=100)
    async with Emulator(config, clock=clock) as emu:
        body = {"baseModel": "gemini-2.5-flash", "supervisedTuningSpec": {
            "trainingDatasetUri": uri}}
        async with http.post(f"{emu.url}/v1beta1/{PARENT}/tuningJobs", json=body) as resp:
            assert resp.status == 200
            name = (await resp.json())["name"]
        clock.advance(10)
        async with http.get(f"{emu.url}/v1beta1/{name}") as resp:
            running = await resp.json()
        assert running["tuningJobState"] == "TUNING_JOB_STATE_PROCESSING_DATASET"
        clock.advance(5)
        async with http.get(f"{emu.url}/v1beta1/{name}") as resp:
            failed = await resp.json()
        assert failed["state"] == "JOB_STATE_FAILED"
        assert failed["endTime"] == "2025-06-02T10:15:18.000000Z"  # start 5 s + 10% of 100 s
        assert "tunedModel" not in failed and "tuningDataStats" not in failed


def contents(*turns: tuple[str, str]) -> str:
    return json.dumps({"contents": [{"role": r, "parts": [{"text": t}]} for r, t in turns]})


@pytest.mark.parametrize(("lines", "line_no", "fragment"), [
    ([contents(("user", "a"), ("model", "b")), "not json"], 2, "invalid JSON"),
    ([contents(("user", "a"), ("model", "b")), "[1, 2]"], 2, "JSON object"),
    ([json.dumps({"systemInstruction": {"parts": [{"text": "s"}]}})], 1, '"contents" is required'),
    ([contents(("user", "a"), ("assistant", "b"))], 1, "role must be 'user' or 'model'"),
    ([contents(("model", "a"), ("user", "b"), ("model", "c"))], 1, "contents[0].role"),
    ([contents(("user", "a"), ("user", "b"), ("model", "c"))], 1, "alternate"),
    ([contents(("user", "a"), ("model", "b"), ("user", "c"))], 1, "last turn"),
    ([json.dumps({"contents": [{"role": "user", "parts": []}]})], 1, "parts must be a non-empty"),
    ([json.dumps({"contents": [{"role": "user", "parts": [{"text": "a", "fileData": {}}]}]})],
     1, "exactly one of"),
    ([json.dumps({"contents": [{"role": "user", "parts": [
        {"fileData": {"fileUri": "ftp://x", "mimeType": "image/png"}}]},
        {"role": "model", "parts": [{"text": "b"}]}]})], 1, "fileUri"),
])
async def test_broken_lines_fail_the_job(http: aiohttp.ClientSession, gcs: Path,
                                         lines: list[str], line_no: int, fragment: str) -> None:
    """Each §7 rule violation fails the job with error code 3 and a message naming the line."""
    uri = write(gcs, "broken.jsonl", "\n".join(lines) + "\n")
    job = await run_job(http, gcs, uri)
    assert job["state"] == "JOB_STATE_FAILED"
    assert job["error"]["code"] == 3
    assert f"line {line_no}:" in job["error"]["message"]
    assert fragment in job["error"]["message"]


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda gcs: "gs://bkt/missing.jsonl", "does not exist"),
    (lambda gcs: write(gcs, "empty.jsonl", "\n\n"), "at least 1"),
    (lambda gcs: "gs://bkt/../../../etc/passwd", "Invalid Cloud Storage URI"),
])
async def test_missing_empty_or_escaping_files_fail(http: aiohttp.ClientSession, gcs: Path,
                                                    make: Any, fragment: str) -> None:
    """A missing, empty, or root-escaping dataset fails the job after create."""
    job = await run_job(http, gcs, make(gcs))
    assert job["state"] == "JOB_STATE_FAILED"
    assert job["error"]["code"] == 3
    assert fragment in job["error"]["message"]


async def test_bad_validation_file_fails(http: aiohttp.ClientSession, gcs: Path) -> None:
    """The validation dataset is checked with the same rules."""
    train = write(gcs, "train.jsonl", GOOD)
    val = write(gcs, "val.jsonl", contents(("user", "a")) + "\n")
    job = await run_job(http, gcs, train, validation_uri=val)
    assert job["state"] == "JOB_STATE_FAILED"
    assert "val.jsonl: line 1" in job["error"]["message"]


async def test_legacy_messages_format_for_gemini_1_0(http: aiohttp.ClientSession,
                                                     gcs: Path) -> None:
    """gemini-1.0-pro-002 takes the `messages` format but needs at least 16 examples."""
    few = write(gcs, "few.jsonl", "\n".join([LEGACY_LINE] * 5))
    job = await run_job(http, gcs, few, model="gemini-1.0-pro-002")
    assert job["state"] == "JOB_STATE_FAILED"
    assert "at least 16" in job["error"]["message"]
    enough = write(gcs, "enough.jsonl", "\n".join([LEGACY_LINE] * 16))
    job = await run_job(http, gcs, enough, model="gemini-1.0-pro-002")
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert job["tuningDataStats"]["supervisedTuningDataStats"]["tuningDatasetExampleCount"] == "16"
    contents_file = write(gcs, "contents.jsonl", GOOD)
    job = await run_job(http, gcs, contents_file, model="gemini-1.0-pro-002")
    assert job["state"] == "JOB_STATE_FAILED"
    assert '"messages" is required' in job["error"]["message"]


async def test_overlong_examples_are_dropped_not_fatal(http: aiohttp.ClientSession,
                                                       gcs: Path) -> None:
    """Examples over the token limit are counted as truncated (1-based line indices), not fatal."""
    long_line = contents(("user", "x" * 400), ("model", "y"))
    short = contents(("user", "hi"), ("model", "ok"))
    uri = write(gcs, "mixed.jsonl", "\n".join([short, long_line, short]) + "\n")
    job = await run_job(http, gcs, uri, max_example_tokens=50)
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    stats = job["tuningDataStats"]["supervisedTuningDataStats"]
    assert stats["tuningDatasetExampleCount"] == "2"
    assert stats["totalTruncatedExampleCount"] == "1"
    assert stats["truncatedExampleIndices"] == ["2"]
    assert stats["droppedExampleReasons"] == ["Example exceeds the maximum token limit."]


async def test_without_gcs_root_stats_are_synthetic(http: aiohttp.ClientSession) -> None:
    """Without gcs_root any gs:// URI succeeds with plausible synthetic stats."""
    async with Emulator(EmulatorConfig(pending_seconds=1, job_seconds=10),
                        clock=ManualClock()) as emu:
        body = {"baseModel": "gemini-2.5-flash",
                "supervisedTuningSpec": {"trainingDatasetUri": "gs://nowhere/x.jsonl"}}
        async with http.post(f"{emu.url}/v1/{PARENT}/tuningJobs", json=body) as resp:
            name = (await resp.json())["name"]
        emu.advance(100)
        async with http.get(f"{emu.url}/v1/{name}") as resp:
            job = await resp.json()
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    stats = job["tuningDataStats"]["supervisedTuningDataStats"]
    assert 100 <= int(stats["tuningDatasetExampleCount"]) <= 1000
