"""Emulator Vertex routes over loopback: CRUD, dialects, enums, validation and errors."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock

PARENT = "projects/my-proj/locations/us-central1"
ROOT = Path(__file__).resolve().parents[2]
INT_ENUMS = "?%24alt=json%3Benum-encoding%3Dint"

CAMEL_BODY: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "tunedModelDisplayName": "sentiment-v3",
    "description": "daemon job",
    "labels": {"tuningd-job-id": "7f3c2a9e-0b1d-4c55-9a53-2f1e0c6d8b11", "managed-by": "tuningd"},
    "supervisedTuningSpec": {
        "trainingDatasetUri": "gs://my-bucket/sft/train.jsonl",
        "validationDatasetUri": "gs://my-bucket/sft/val.jsonl",
        "hyperParameters": {"epochCount": "3", "learningRateMultiplier": 1.0,
                            "adapterSize": "ADAPTER_SIZE_FOUR"},
    },
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(pending_seconds=5, job_seconds=100, seed=7),
                        clock=clock) as emulator:
        yield emulator


async def call(http: aiohttp.ClientSession, method: str, url: str,
               body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {}
    if raw is not None:
        kwargs["data"] = raw
        kwargs["headers"] = {"Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    async with http.request(method, url, **kwargs) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def create(http: aiohttp.ClientSession, emu: Emulator, body: Any = None,
                 version: str = "v1", parent: str = PARENT, query: str = "") -> dict[str, Any]:
    status, job = await call(http, "POST", f"{emu.url}/{version}/{parent}/tuningJobs{query}",
                             body if body is not None else CAMEL_BODY)
    assert status == 200, job
    assert isinstance(job, dict)
    return job


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_create_returns_pending_job_named_with_project_number(
        http: aiohttp.ClientSession, emu: Emulator, version: str) -> None:
    """create answers a PENDING job named with the project number and a 19-digit id."""
    job = await create(http, emu, version=version)
    assert re.fullmatch(r"projects/123456789012/locations/us-central1/tuningJobs/\d{19}",
                        job["name"])
    assert job["state"] == "JOB_STATE_PENDING"
    assert job["createTime"] == job["updateTime"] == "2025-06-02T10:15:03.000000Z"
    assert job["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": "3", "learningRateMultiplier": 1.0, "adapterSize": "ADAPTER_SIZE_FOUR"}
    assert job["labels"] == CAMEL_BODY["labels"]
    for absent in ("startTime", "endTime", "error", "tunedModel", "experiment"):
        assert absent not in job


async def test_snake_case_dialect_is_accepted_and_rendered_camel(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """The docs' snake_case body with a numeric epoch_count is accepted and echoed in camelCase."""
    body = json.loads((ROOT / "examples" / "request-advanced.json").read_text())
    job = await create(http, emu, body)
    spec = job["supervisedTuningSpec"]
    assert spec["trainingDatasetUri"].endswith("sft_train_data.jsonl")
    assert spec["hyperParameters"]["epochCount"] == "4"
    assert job["tunedModelDisplayName"] == "tuned_gemini_flash"


async def test_int_enums_in_and_out(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """GAPIC's int enums are accepted; $alt=json;enum-encoding=int renders ints, else names."""
    body = copy.deepcopy(CAMEL_BODY)
    body["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] = 2
    job = await create(http, emu, body, version="v1beta1", query=INT_ENUMS)
    assert job["state"] == 2
    assert job["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == 2
    status, named = await call(http, "GET", f"{emu.url}/v1beta1/{job['name']}")
    assert status == 200
    assert named["state"] == "JOB_STATE_PENDING"
    assert named["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_FOUR"


async def test_get_accepts_project_id_or_number_and_ignores_unknown_query(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """get works under the project number, any project id, and with unknown query parameters."""
    job = await create(http, emu)
    job_id = job["name"].rsplit("/", 1)[1]
    for parent in ("projects/123456789012/locations/us-central1",
                   "projects/some-other-id/locations/us-central1"):
        status, got = await call(
            http, "GET", f"{emu.url}/v1/{parent}/tuningJobs/{job_id}?prettyPrint=false&alt=json")
        assert status == 200
        assert got["name"] == job["name"]


async def test_unknown_job_and_other_location_are_not_found(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A missing id, or an existing id under another location, is 404 NOT_FOUND in the envelope."""
    job = await create(http, emu)
    job_id = job["name"].rsplit("/", 1)[1]
    for url in (f"{emu.url}/v1/{PARENT}/tuningJobs/1234567890123456789",
                f"{emu.url}/v1/projects/my-proj/locations/europe-west4/tuningJobs/{job_id}"):
        status, body = await call(http, "GET", url)
        assert status == 404
        assert body["error"]["status"] == "NOT_FOUND"
        assert body["error"]["code"] == 404
        assert "TuningJob does not exist" in body["error"]["message"]


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/v1/{name}"),
    ("PATCH", "/v1/{name}"),
    ("POST", "/v1/{name}"),
    ("GET", "/v1/{name}:cancel"),
    ("POST", "/v1/{name}:pause"),
    ("GET", "/v2/{name}"),
    ("GET", "/v1/projects/p/locations/us-central1/customJobs"),
    ("GET", "/nothing/here"),
])
async def test_unsupported_methods_and_routes_are_404(
        http: aiohttp.ClientSession, emu: Emulator, method: str, path: str) -> None:
    """There is no delete/update and no other resource: such calls get 404 in Google's envelope."""
    job = await create(http, emu)
    status, body = await call(http, method, emu.url + path.format(name=job["name"]))
    assert status == 404
    assert body["error"]["status"] == "NOT_FOUND"
    status, _ = await call(http, "GET", f"{emu.url}/v1/{job['name']}")
    assert status == 200


async def test_malformed_json_is_invalid_argument(http: aiohttp.ClientSession,
                                                  emu: Emulator) -> None:
    """A body that is not JSON gets 400 INVALID_ARGUMENT and creates nothing."""
    status, body = await call(http, "POST", f"{emu.url}/v1/{PARENT}/tuningJobs",
                              raw=b'{"baseModel": ')
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert "Invalid JSON payload received" in body["error"]["message"]
    assert emu.state.jobs == {}


async def test_unknown_field_rejected_in_strict_mode(http: aiohttp.ClientSession,
                                                     emu: Emulator) -> None:
    """By default an unknown JSON field is 400 'Unknown name', like Google's front end."""
    body = copy.deepcopy(CAMEL_BODY)
    body["supervisedTuningSpec"]["fancyNewKnob"] = True
    status, err = await call(http, "POST", f"{emu.url}/v1/{PARENT}/tuningJobs", body)
    assert status == 400
    assert 'Unknown name "fancyNewKnob"' in err["error"]["message"]


async def test_unknown_field_ignored_when_configured(http: aiohttp.ClientSession) -> None:
    """With strict_unknown_fields=False, unknown fields are dropped and the job is created."""
    body = copy.deepcopy(CAMEL_BODY)
    body["fancyNewKnob"] = {"x": 1}
    async with Emulator(EmulatorConfig(strict_unknown_fields=False),
                        clock=ManualClock()) as emu:
        job = await create(http, emu, body)
    assert "fancyNewKnob" not in job


async def test_v1_rejects_v1beta1_only_fields(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """tuningMode exists only in v1beta1, so v1 rejects it while v1beta1 accepts it."""
    body = copy.deepcopy(CAMEL_BODY)
    body["supervisedTuningSpec"]["tuningMode"] = "TUNING_MODE_PEFT_ADAPTER"
    status, _ = await call(http, "POST", f"{emu.url}/v1/{PARENT}/tuningJobs", body)
    assert status == 400
    job = await create(http, emu, body, version="v1beta1")
    assert job["supervisedTuningSpec"]["tuningMode"] == "TUNING_MODE_PEFT_ADAPTER"


async def test_output_only_fields_in_create_body_are_ignored(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A create body carrying output fields (state, name) gets a fresh PENDING job anyway."""
    body = copy.deepcopy(CAMEL_BODY)
    body.update({"state": "JOB_STATE_SUCCEEDED", "name": f"{PARENT}/tuningJobs/1"})
    job = await create(http, emu, body)
    assert job["state"] == "JOB_STATE_PENDING"
    assert not job["name"].endswith("/1")


def _with(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(CAMEL_BODY)
    target = body
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(("body", "fragment"), [
    (_with("baseModel", _DELETE), "base_model or pre_tuned_model must be set"),
    (_with("baseModel", "gemini-9-ultra"), "not supported for tuning"),
    (_with("preTunedModel", {"tunedModelName": "projects/p/locations/l/models/1"}),
     "Only one of base_model and pre_tuned_model"),
    (_with("supervisedTuningSpec", _DELETE), "supervised_tuning_spec is required"),
    (_with("supervisedTuningSpec.trainingDatasetUri", _DELETE), "training_dataset_uri is required"),
    (_with("supervisedTuningSpec.trainingDatasetUri", "/local/train.jsonl"),
     "Invalid training dataset URI"),
    (_with("supervisedTuningSpec.validationDatasetUri", "http://x/val.jsonl"),
     "Invalid validation dataset URI"),
    (_with("supervisedTuningSpec.hyperParameters.adapterSize", "ADAPTER_SIZE_THIRTY_TWO"),
     "The adapter size is not supported for this base model."),
    (_with("supervisedTuningSpec.hyperParameters.epochCount", -1), "Invalid epoch_count"),
    (_with("supervisedTuningSpec.hyperParameters.epochCount", "many"), "epoch_count"),
    (_with("supervisedTuningSpec.hyperParameters.learningRateMultiplier", -0.5),
     "Invalid learning_rate_multiplier"),
    (_with("tunedModelDisplayName", "x" * 129), "tuned_model_display_name is too long"),
    (_with("labels", {"Upper": "v"}), 'Label key "Upper" is invalid'),
    (_with("labels", {"k": "Bad Value"}), "Label value"),
    (_with("labels", {f"k{i}": "v" for i in range(65)}), "Too many labels"),
    (_with("supervisedTuningSpec.hyperParameters.adapterSize", "ADAPTER_SIZE_HUGE"),
     "adapter_size"),
    ([1, 2], "Expected an object"),
])
async def test_create_validation_errors(http: aiohttp.ClientSession, emu: Emulator,
                                        body: Any, fragment: str) -> None:
    """Each create-time rule answers 400 INVALID_ARGUMENT with a Vertex-like message."""
    status, err = await call(http, "POST", f"{emu.url}/v1beta1/{PARENT}/tuningJobs", body)
    assert status == 400, err
    assert err["error"]["status"] == "INVALID_ARGUMENT"
    assert fragment in err["error"]["message"]
    assert emu.state.jobs == {}


async def test_lr_and_lr_multiplier_are_exclusive(http: aiohttp.ClientSession,
                                                  emu: Emulator) -> None:
    """learningRate (v1beta1) together with learningRateMultiplier is 400."""
    body = _with("supervisedTuningSpec.hyperParameters.learningRate", 0.001)
    status, err = await call(http, "POST", f"{emu.url}/v1beta1/{PARENT}/tuningJobs", body)
    assert status == 400
    assert "cannot be set at the same time" in err["error"]["message"]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_cancel_returns_empty_object_and_job_becomes_cancelling(
        http: aiohttp.ClientSession, emu: Emulator, version: str) -> None:
    """:cancel answers {} and the job is CANCELLING until cancel_seconds pass, then CANCELLED."""
    job = await create(http, emu, version=version)
    status, body = await call(http, "POST", f"{emu.url}/{version}/{job['name']}:cancel", {})
    assert (status, body) == (200, {})
    _, got = await call(http, "GET", f"{emu.url}/{version}/{job['name']}")
    assert got["state"] == "JOB_STATE_CANCELLING"
    emu.advance(1.0)
    _, got = await call(http, "GET", f"{emu.url}/{version}/{job['name']}")
    assert got["state"] == "JOB_STATE_CANCELLED"
    assert got["error"] == {"code": 1, "message": "Tuning job was cancelled."}
    assert got["endTime"] == got["updateTime"]


async def test_cancel_with_empty_body_and_repeat_cancel(http: aiohttp.ClientSession,
                                                        emu: Emulator) -> None:
    """genai posts :cancel with no body; a second cancel while CANCELLING is also fine."""
    job = await create(http, emu)
    async with http.post(f"{emu.url}/v1/{job['name']}:cancel") as resp:
        assert resp.status == 200
        assert await resp.json() == {}
    status, _ = await call(http, "POST", f"{emu.url}/v1/{job['name']}:cancel", {})
    assert status == 200


async def test_cancel_of_ended_job_is_failed_precondition(
        http: aiohttp.ClientSession, emu: Emulator) -> None:
    """Cancelling a SUCCEEDED or CANCELLED job answers 400 FAILED_PRECONDITION."""
    first = await create(http, emu)
    emu.advance(1000)
    status, err = await call(http, "POST", f"{emu.url}/v1/{first['name']}:cancel", {})
    assert status == 400
    assert err["error"]["status"] == "FAILED_PRECONDITION"
    assert "JOB_STATE_SUCCEEDED" in err["error"]["message"]
    second = await create(http, emu)
    await call(http, "POST", f"{emu.url}/v1/{second['name']}:cancel", {})
    emu.advance(5)
    status, err = await call(http, "POST", f"{emu.url}/v1/{second['name']}:cancel", {})
    assert (status, err["error"]["status"]) == (400, "FAILED_PRECONDITION")


async def test_cancel_unknown_job_is_not_found(http: aiohttp.ClientSession,
                                               emu: Emulator) -> None:
    """:cancel on an id that does not exist is 404."""
    status, err = await call(http, "POST",
                             f"{emu.url}/v1/{PARENT}/tuningJobs/1111111111111111111:cancel", {})
    assert (status, err["error"]["status"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_list_returns_created_jobs_and_empty_is_empty_object(
        http: aiohttp.ClientSession, emu: Emulator, version: str) -> None:
    """An empty list renders as {}; after creates the jobs come back newest first."""
    url = f"{emu.url}/{version}/{PARENT}/tuningJobs"
    assert await call(http, "GET", url) == (200, {})
    first = await create(http, emu, version=version)
    emu.advance(1)
    second = await create(http, emu, version=version)
    status, body = await call(http, "GET", url)
    assert status == 200
    assert [j["name"] for j in body["tuningJobs"]] == [second["name"], first["name"]]
    assert "nextPageToken" not in body


# --------------------------------------------------------------------------------------------
# Robustness and wire fidelity (regressions)

_SPEC_PREFIX = (b'{"baseModel":"gemini-2.5-flash","supervisedTuningSpec":{'
                b'"trainingDatasetUri":"gs://b/t.jsonl",')
HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("duplicate key", b'{"baseModel":"gemini-2.5-flash","baseModel":"gemini-2.0-flash-001",'
                      b'"supervisedTuningSpec":{"trainingDatasetUri":"gs://b/t.jsonl"}}'),
    ("5000-digit number", _SPEC_PREFIX + b'"hyperParameters":{"epochCount":1'
                          + b"0" * 5000 + b"}}}"),
    ("double overflow", _SPEC_PREFIX + b'"evaluationConfig":{"x":1e999}}}'),
    ("deep struct", _SPEC_PREFIX + b'"evaluationConfig":' + b'{"a":' * 700 + b"1"
                    + b"}" * 700 + b"}}"),
    ("100k-deep array", b"[" * 100_000 + b"]" * 100_000),
    ("lone surrogate", b'{"baseModel":"gemini-2.5-flash","description":"\\udfff",'
                       b'"supervisedTuningSpec":{"trainingDatasetUri":"gs://b/t.jsonl"}}'),
]


@pytest.mark.parametrize(("what", "raw"), HOSTILE_BODIES, ids=[w for w, _ in HOSTILE_BODIES])
async def test_hostile_create_bodies_are_400_not_500(http: aiohttp.ClientSession, emu: Emulator,
                                                     what: str, raw: bytes) -> None:
    """Bodies that crashed the emulator (RecursionError, int-digit limit) or were silently
    ambiguous answer 400 INVALID_ARGUMENT and create nothing."""
    status, body = await call(http, "POST", f"{emu.url}/v1beta1/{PARENT}/tuningJobs", raw=raw)
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), what
    assert body["error"]["message"].startswith("Invalid JSON payload received.")
    assert emu.state.jobs == {}


async def test_every_answer_has_googles_content_type(http: aiohttp.ClientSession,
                                                     emu: Emulator) -> None:
    """Create, get, list, cancel and errors answer `application/json; charset=UTF-8`."""
    job = await create(http, emu)
    base = f"{emu.url}/v1/{PARENT}/tuningJobs"
    job_url = f"{emu.url}/v1/{job['name']}"
    for method, url in (("GET", job_url), ("GET", base), ("POST", job_url + ":cancel"),
                        ("GET", base + "/404"), ("DELETE", job_url), ("GET", emu.url + "/x")):
        async with http.request(method, url) as resp:
            assert resp.headers["Content-Type"] == "application/json; charset=UTF-8", url


async def test_page_token_of_another_location_is_refused(http: aiohttp.ClientSession,
                                                         emu: Emulator) -> None:
    """A page token only resumes the list it came from: another location answers 400, the
    other API version of the same collection accepts it."""
    for _ in range(3):
        await create(http, emu)
    status, page = await call(http, "GET", f"{emu.url}/v1/{PARENT}/tuningJobs?pageSize=1")
    token = page["nextPageToken"]
    other = PARENT.replace("us-central1", "europe-west4")
    status, body = await call(http, "GET",
                              f"{emu.url}/v1/{other}/tuningJobs?pageToken={token}")
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, body = await call(
        http, "GET", f"{emu.url}/v1beta1/{PARENT}/tuningJobs?pageSize=1&pageToken={token}")
    assert status == 200 and len(body["tuningJobs"]) == 1


async def test_long_filter_gets_a_json_answer(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """A filter whose URL exceeds aiohttp's default 8190-byte request line still reaches the
    emulator and gets JSON (here: a match)."""
    job = await create(http, emu)
    text = " OR ".join(['labels.managed-by="tuningd"'] * 500)
    async with http.get(f"{emu.url}/v1/{PARENT}/tuningJobs", params={"filter": text}) as resp:
        assert resp.status == 200
        assert [j["name"] for j in (await resp.json())["tuningJobs"]] == [job["name"]]


@pytest.mark.parametrize("raw", [b"[1]", b"null", b'{"force": true}'], ids=str)
async def test_cancel_body_must_be_an_empty_message(http: aiohttp.ClientSession, emu: Emulator,
                                                    raw: bytes) -> None:
    """:cancel with a body other than nothing or {} answers 400 and leaves the job running."""
    job = await create(http, emu)
    status, body = await call(http, "POST", f"{emu.url}/v1/{job['name']}:cancel", raw=raw)
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, after = await call(http, "GET", f"{emu.url}/v1/{job['name']}")
    assert after["state"] == "JOB_STATE_PENDING"
