"""Property tests of tuningd.vertex.wire: canonical TuningJobs survive render -> JSON -> parse."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tuningd.vertex import wire

# ---------------------------------------------------------------- canonical strategies
# Written out from spec §2 by hand (not derived from wire's schema) so they check it.

text = st.text(min_size=1, max_size=12)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1).filter(bool)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1).filter(bool)
double = st.floats(allow_nan=False).filter(bool)
true = st.just(True)
timestamp = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0"))
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                  allow_infinity=False) | text
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(text, inner, max_size=3), max_leaves=8)
struct = st.dictionaries(text, json_value, min_size=1, max_size=3)


def enum(numbers: Any) -> st.SearchStrategy[str]:
    return st.sampled_from([k for k, v in numbers.items() if v != 0])


def msg(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields).filter(bool)


def nonempty(s: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(s, min_size=1, max_size=3)


hyper = msg(epochCount=int64, learningRateMultiplier=double,
            adapterSize=enum(wire.ADAPTER_SIZE_NUMBERS), learningRate=double, batchSize=int64)
content = msg(role=text, parts=nonempty(msg(text=text)))
evaluation_config = msg(
    metrics=nonempty(msg(bleuSpec=msg(useEffectiveOrder=true),
                         pointwiseMetricSpec=msg(metricPromptTemplate=text, systemInstruction=text),
                         aggregationMetrics=nonempty(st.sampled_from(["AVERAGE", "MODE"])))),
    outputConfig=msg(gcsDestination=msg(outputUriPrefix=text)),
    autoraterConfig=msg(autoraterModel=text, flipEnabled=true))
spec = msg(trainingDatasetUri=text, validationDatasetUri=text, hyperParameters=hyper,
           exportLastCheckpointOnly=true, evaluationConfig=evaluation_config,
           tuningMode=enum(wire.TUNING_MODE_NUMBERS))
distribution = msg(sum=int64, billableSum=int64, min=double, max=double, mean=double,
                   median=double, p5=double, p95=double,
                   buckets=nonempty(st.fixed_dictionaries({}, optional={
                       "count": double, "left": double, "right": double})))
sft_stats = msg(tuningDatasetExampleCount=int64, totalTuningCharacterCount=int64,
                totalBillableCharacterCount=int64, totalBillableTokenCount=int64,
                tuningStepCount=int64, totalTruncatedExampleCount=int64,
                truncatedExampleIndices=nonempty(st.integers(0, 2**63 - 1)),
                droppedExampleReasons=nonempty(st.text(max_size=5)),
                userDatasetExamples=nonempty(content),
                userInputTokenDistribution=distribution,
                userOutputTokenDistribution=distribution,
                userMessagePerExampleDistribution=distribution)
canonical_job = msg(
    name=text, baseModel=text,
    preTunedModel=msg(tunedModelName=text, checkpointId=text, baseModel=text),
    supervisedTuningSpec=spec, tunedModelDisplayName=text, description=text,
    labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3),
    encryptionSpec=msg(kmsKeyName=text), serviceAccount=text,
    state=enum(wire.JOB_STATE_NUMBERS), createTime=timestamp, updateTime=timestamp,
    startTime=timestamp, endTime=timestamp,
    error=msg(code=int32, message=text, details=nonempty(struct)),
    experiment=text,
    tunedModel=msg(model=text, endpoint=text, checkpoints=nonempty(st.fixed_dictionaries(
        {}, optional={"checkpointId": text, "epoch": int64, "step": int64, "endpoint": text}))),
    tuningDataStats=msg(supervisedTuningDataStats=sft_stats),
    evaluateDatasetRuns=nonempty(msg(operationName=text, evaluationRun=text, checkpointId=text)),
    gcsMetricsUri=text, pipelineJob=text,
    customBaseModel=text, outputUri=text,
    tuningJobState=enum(wire.TUNING_JOB_STATE_NUMBERS),
    tuningJobMetadata=msg(completedEpochCount=int64, completedStepCount=int64),
    satisfiesPzs=true, satisfiesPzi=true,
)

# ---------------------------------------------------------------- dialect transforms

# Keys whose values are maps or free-form JSON: their contents are never renamed.
OPAQUE = {"labels", "details"}
INT64 = {"epochCount", "batchSize", "epoch", "step", "sum", "billableSum",
         "completedEpochCount", "completedStepCount", "tuningDatasetExampleCount",
         "totalTuningCharacterCount", "totalBillableCharacterCount", "totalBillableTokenCount",
         "tuningStepCount", "totalTruncatedExampleCount", "truncatedExampleIndices"}


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m[1].lower(), name)


def to_other_dialect(value: Any) -> Any:
    """Rendered JSON -> snake_case keys with int64 as JSON numbers (the other valid dialect)."""
    if isinstance(value, list):
        return [to_other_dialect(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key in OPAQUE:
            out[snake(key)] = v
        elif key in INT64:
            out[snake(key)] = [int(x) for x in v] if isinstance(v, list) else int(v)
        else:
            out[snake(key)] = to_other_dialect(v)
    return out


def through_json(obj: Any) -> Any:
    return wire.parse_json_body(json.dumps(obj, allow_nan=False).encode())


# ---------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(canonical_job, st.booleans())
def test_round_trip_through_json(job: dict[str, Any], enum_as_int: bool) -> None:
    """parse(render(x)) == x for canonical x, via real JSON text, with names or int enums."""
    rendered = wire.render_tuning_job(job, enum_as_int=enum_as_int, api_version="v1beta1")
    assert wire.parse_tuning_job(through_json(rendered)) == job


@settings(max_examples=100, deadline=None)
@given(canonical_job)
def test_snake_case_dialect_parses_equal(job: dict[str, Any]) -> None:
    """snake_case keys with numeric int64 parse to the same canonical job as camelCase."""
    rendered = wire.render_tuning_job(job, enum_as_int=True, api_version="v1beta1")
    assert wire.parse_tuning_job(to_other_dialect(rendered)) == job


@settings(max_examples=100, deadline=None)
@given(canonical_job)
def test_render_v1_is_strict_v1(job: dict[str, Any]) -> None:
    """v1 output parses under strict v1 rules and loses only v1beta1-only fields."""
    rendered = wire.render_tuning_job(job, api_version="v1")
    parsed = wire.parse_tuning_job(through_json(rendered), api_version="v1")
    beta = wire.parse_tuning_job(wire.render_tuning_job(job, api_version="v1beta1"))
    assert parsed == wire.parse_tuning_job(rendered)
    for key in ("tuningJobState", "tuningJobMetadata", "pipelineJob", "customBaseModel",
                "outputUri", "satisfiesPzs", "satisfiesPzi"):
        assert key not in parsed
        beta.pop(key, None)
    hp = beta.get("supervisedTuningSpec", {}).get("hyperParameters", {})
    hp.pop("learningRate", None)
    hp.pop("batchSize", None)
    beta.get("supervisedTuningSpec", {}).pop("tuningMode", None)
    assert parsed == _drop_empty(beta)


# Oneof members keep an empty message: presence says which member is set.
ONEOF_MEMBERS = {"supervisedTuningSpec"}


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in OPAQUE:
                out[k] = v
                continue
            v = _drop_empty(v)
            if v != {} or k in ONEOF_MEMBERS:
                out[k] = v
        return out
    return value


@settings(max_examples=100, deadline=None)
@given(canonical_job)
def test_render_output_is_proto3_json(job: dict[str, Any]) -> None:
    """Rendered output has camelCase keys, int64 as strings and no empty values outside maps."""
    rendered = wire.render_tuning_job(job, api_version="v1beta1")

    def check(value: Any, key: str = "") -> None:
        if key in OPAQUE:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                assert "_" not in k
                assert v not in ("", 0, False, [], {}, None) or key == "buckets"
                if k in INT64:
                    assert all(isinstance(x, str) for x in (v if isinstance(v, list) else [v]))
                check(v, k)
        elif isinstance(value, list):
            for v in value:
                check(v, key)

    check(rendered)


@settings(max_examples=100, deadline=None)
@given(canonical_job)
def test_strip_output_only_leaves_an_input_job(job: dict[str, Any]) -> None:
    """After strip_output_only no output-only field remains and the result is still canonical."""
    stripped = wire.strip_output_only(job)
    for key in ("name", "state", "createTime", "updateTime", "startTime", "endTime", "error",
                "experiment", "tunedModel", "tuningDataStats", "evaluateDatasetRuns",
                "gcsMetricsUri", "pipelineJob", "tuningJobState", "tuningJobMetadata",
                "satisfiesPzs", "satisfiesPzi"):
        assert key not in stripped
    assert "baseModel" not in stripped.get("preTunedModel", {})
    assert wire.parse_tuning_job(wire.render_tuning_job(stripped, api_version="v1beta1")) \
        == stripped


@settings(max_examples=200, deadline=None)
# Years 1900-2200: beyond that a float of Unix seconds cannot hold every microsecond.
@given(st.integers(min_value=-2208988800 * 10**6, max_value=7258118400 * 10**6))
def test_timestamp_round_trip(micros: int) -> None:
    """format_timestamp/parse_timestamp round-trip every microsecond of realistic years."""
    text = wire.format_timestamp(micros / 10**6)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    assert wire.format_timestamp(wire.parse_timestamp(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_page_token_round_trip(offset_key: str, filter_text: str) -> None:
    """A page token decodes to its offset key under the same filter only."""
    token = wire.encode_page_token(offset_key, filter_text)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert wire.decode_page_token(token, filter_text) == offset_key
