"""Tests of the wire's list filters (AIP-160 subset), page tokens and create-time validation."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tuningd.core.errors import InvalidArgument
from tuningd.vertex import wire

UUID = "7f3c2a9e-0b1d-4c55-9a53-2f1e0c6d8b11"
JOB_A: dict[str, Any] = {
    "tunedModelDisplayName": "my_job_one",
    "labels": {"tuningd-job-id": UUID, "managed-by": "tuningd", "team": "ml"},
    "state": "JOB_STATE_RUNNING",
    "createTime": "2025-06-02T10:15:03.418225Z",
}
JOB_B: dict[str, Any] = {
    "tunedModelDisplayName": "other",
    "labels": {"managed-by": "someone"},
    "state": "JOB_STATE_SUCCEEDED",
    "createTime": "2021-05-17T00:00:00.000000Z",
}
JOB_C: dict[str, Any] = {}  # no labels, no name, no state, no time


def matches(text: str) -> list[str]:
    pred = wire.compile_filter(text)
    return [name for name, job in (("a", JOB_A), ("b", JOB_B), ("c", JOB_C)) if pred(job)]


def bad_filter(text: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        wire.compile_filter(text)
    assert info.value.message.startswith("Invalid filter: ")
    return info.value.message


# ---------------------------------------------------------------- filter


def test_empty_filter_matches_all() -> None:
    """An empty or blank filter matches every job."""
    assert matches("") == ["a", "b", "c"]
    assert matches("   ") == ["a", "b", "c"]


def test_label_equality_unquoted_dashes() -> None:
    """labels.key=value works unquoted with dashes in the key and a uuid value."""
    assert matches(f"labels.tuningd-job-id={UUID}") == ["a"]
    assert matches(f'labels.tuningd-job-id="{UUID}"') == ["a"]
    assert matches("labels.managed-by=tuningd") == ["a"]
    assert matches("labels.managed-by != tuningd") == ["b", "c"]


def test_label_has() -> None:
    """labels.key:* tests presence; labels.key:value matches the value (with * wildcards)."""
    assert matches("labels.team:*") == ["a"]
    assert matches("labels.managed-by:*") == ["a", "b"]
    assert matches("labels.managed-by:tuningd") == ["a"]
    assert matches('labels.managed-by:"some*"') == ["b"]
    assert matches("labels:team") == ["a"]


def test_state_filters() -> None:
    """state = / != accept quoted or unquoted enum names."""
    assert matches("state=JOB_STATE_RUNNING") == ["a"]
    assert matches('state="JOB_STATE_SUCCEEDED"') == ["b"]
    assert matches("state!=JOB_STATE_RUNNING") == ["b", "c"]
    assert "JOB_STATE_NOPE" in bad_filter("state=JOB_STATE_NOPE")
    bad_filter("state<JOB_STATE_RUNNING")


def test_display_name_filters() -> None:
    """display_name supports exact =, != and : with * wildcards against tunedModelDisplayName."""
    assert matches('display_name="my_job_one"') == ["a"]
    assert matches('display_name:"my_job_*"') == ["a"]
    assert matches("display_name:*o*") == ["a", "b"]
    assert matches('display_name!="other"') == ["a", "c"]
    assert matches('display_name="my_job_*"') == []


def test_create_time_comparisons() -> None:
    """create_time supports all six comparators against RFC 3339 values, quoted or not."""
    assert matches('create_time>"2021-05-18T00:00:00Z"') == ["a"]
    assert matches("create_time<2021-05-18T00:00:00Z") == ["b"]
    assert matches('create_time<="2021-05-17T00:00:00Z"') == ["b"]
    assert matches('create_time>="2021-05-17T02:00:00+02:00"') == ["a", "b"]
    assert matches('create_time="2025-06-02T10:15:03.418225Z"') == ["a"]
    assert matches('create_time!="2025-06-02T10:15:03.418225Z"') == ["b", "c"]
    assert "'yesterday'" in bad_filter('create_time>"yesterday"')
    bad_filter('create_time:"2021-05-18T00:00:00Z"')


def test_boolean_operators_and_negation() -> None:
    """AND, OR, NOT, '-' and parentheses combine restrictions."""
    assert matches("state=JOB_STATE_RUNNING OR state=JOB_STATE_SUCCEEDED") == ["a", "b"]
    assert matches("NOT state=JOB_STATE_RUNNING") == ["b", "c"]
    assert matches("-labels.team:*") == ["b", "c"]
    assert matches("labels.managed-by:* AND NOT (labels.team=ml)") == ["b"]
    assert matches("(state=JOB_STATE_RUNNING)") == ["a"]


def test_or_binds_tighter_than_and() -> None:
    """Per AIP-160, `a AND b OR c` means `a AND (b OR c)`."""
    text = "state=JOB_STATE_RUNNING AND display_name=other OR labels.team=ml"
    assert matches(text) == ["a"]
    # With conventional precedence this would be `(... AND ...) OR labels.team=ml` -> ["a"].
    assert matches("display_name=nope AND state=JOB_STATE_SUCCEEDED OR labels.team=ml") == []


def test_juxtaposition_is_and() -> None:
    """Restrictions side by side are ANDed; OR still binds tighter inside them."""
    assert matches("labels.managed-by:* state=JOB_STATE_SUCCEEDED") == ["b"]
    assert matches("labels.managed-by:* state=JOB_STATE_SUCCEEDED OR labels.team=ml") == ["a", "b"]


def test_quoted_string_escapes() -> None:
    """Quoted values honour backslash escapes and single quotes."""
    job = {"tunedModelDisplayName": 'say "hi"'}
    assert wire.compile_filter(r'display_name="say \"hi\""')(job)
    assert wire.compile_filter("display_name='say \"hi\"'")(job)


def test_filter_errors() -> None:
    """Unknown fields, bad syntax and unterminated strings are InvalidArgument naming the token."""
    assert "'foo'" in bad_filter("foo=bar")
    assert "'name'" in bad_filter("name=x")
    bad_filter("labels.a=")
    bad_filter("state=JOB_STATE_RUNNING AND")
    assert "')'" in bad_filter("(state=JOB_STATE_RUNNING))")
    bad_filter("(state=JOB_STATE_RUNNING")
    bad_filter('display_name="abc')
    bad_filter("hello")
    bad_filter("labels.a!b")
    bad_filter("AND labels.a=b")
    bad_filter("()")


# ---------------------------------------------------------------- page tokens


def test_page_token_round_trip_and_filter_binding() -> None:
    """A token decodes under its own filter and is rejected under another."""
    token = wire.encode_page_token("2025-06-02T10:15:03.418225Z/123", "labels.a=b")
    assert wire.decode_page_token(token, "labels.a=b") == "2025-06-02T10:15:03.418225Z/123"
    with pytest.raises(InvalidArgument, match="Invalid page token"):
        wire.decode_page_token(token, "labels.a=c")
    with pytest.raises(InvalidArgument, match="Invalid page token"):
        wire.decode_page_token(token, "")


def test_page_token_garbage_and_tampering() -> None:
    """Garbage, truncated or bit-flipped tokens are rejected."""
    token = wire.encode_page_token("offset-42", "")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[10] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in ("x", "!!!!", "AAAA", token[:-2], tampered, token + "A", "a" * 5000):
        with pytest.raises(InvalidArgument, match="Invalid page token"):
            wire.decode_page_token(bad, "")


def test_page_token_is_stable_across_processes() -> None:
    """Tokens are deterministic (keyless), so they survive a daemon restart."""
    assert wire.encode_page_token("k", "f") == wire.encode_page_token("k", "f")
    assert wire.decode_page_token("", "f") == ""


# ---------------------------------------------------------------- validate_create


def valid_job(**changes: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "baseModel": "gemini-2.5-flash",
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://bucket/train.jsonl",
                                 "hyperParameters": {}},
        "labels": {"tuningd-job-id": UUID, "managed-by": "tuningd"},
    }
    job.update(changes)
    return job


def invalid(job: dict[str, Any], catalog: wire.ModelCatalog | None = None) -> str:
    with pytest.raises(InvalidArgument) as info:
        wire.validate_create(job, catalog)
    return info.value.message


def hp(**values: Any) -> dict[str, Any]:
    return {"trainingDatasetUri": "gs://bucket/train.jsonl", "hyperParameters": values}


def test_valid_jobs_pass() -> None:
    """Well-formed jobs for catalog models, datasets and continuous tuning are accepted."""
    wire.validate_create(valid_job())
    wire.validate_create(valid_job(baseModel="publishers/google/models/gemini-2.5-pro"))
    wire.validate_create(valid_job(supervisedTuningSpec={
        "trainingDatasetUri": "projects/p/locations/us-central1/datasets/123",
        "validationDatasetUri": "gs://bucket/val.jsonl",
        "hyperParameters": {"epochCount": 100, "learningRateMultiplier": 0.5,
                            "adapterSize": "ADAPTER_SIZE_SIXTEEN"}}))
    pre = valid_job(preTunedModel={"tunedModelName": "projects/p/locations/l/models/m@2"})
    del pre["baseModel"]
    wire.validate_create(pre)
    wire.validate_create(valid_job(tunedModelDisplayName="é" * 128,
                                   labels={"ключ": "值", "a_1-b": ""}))


def test_source_model_exactly_one() -> None:
    """Exactly one of baseModel and preTunedModel must be set."""
    both = valid_job(preTunedModel={"tunedModelName": "projects/p/locations/l/models/m"})
    assert "Only one of" in invalid(both)
    neither = valid_job()
    del neither["baseModel"]
    assert "must be set" in invalid(neither)
    assert "tuned_model_name" in invalid(
        {"preTunedModel": {"checkpointId": "1"}, "supervisedTuningSpec": hp()})


def test_unknown_base_model() -> None:
    """A base model outside the catalog is rejected; a custom catalog is honoured."""
    assert "gemini-9" in invalid(valid_job(baseModel="gemini-9"))
    catalog = wire.ModelCatalog(models={"m": wire.ModelInfo("m", frozenset())})
    wire.validate_create(valid_job(baseModel="m"), catalog)
    assert "gemini-2.5-flash" in invalid(valid_job(), catalog)


def test_adapter_size_per_model() -> None:
    """Adapter sizes outside the model's list get Vertex's exact message."""
    job = valid_job(baseModel="gemini-2.5-pro",
                    supervisedTuningSpec=hp(adapterSize="ADAPTER_SIZE_SIXTEEN"))
    assert invalid(job) == "The adapter size is not supported for this base model."
    job = valid_job(supervisedTuningSpec=hp(adapterSize="ADAPTER_SIZE_THIRTY_TWO"))
    assert invalid(job) == "The adapter size is not supported for this base model."
    wire.validate_create(valid_job(baseModel="gemini-2.0-flash-001",
                                   supervisedTuningSpec=hp(adapterSize="ADAPTER_SIZE_TWO")))


def test_default_catalog_contents() -> None:
    """DEFAULT_CATALOG holds the spec's models with their adapter sizes and dataset format."""
    names = set(wire.DEFAULT_CATALOG.models)
    assert {"gemini-1.0-pro-002", "gemini-2.5-flash", "gemini-3.1-flash-lite",
            "gemini-3.5-flash-lite", "translation-llm-002"} <= names
    info = wire.DEFAULT_CATALOG.get("gemini-1.0-pro-002")
    assert info is not None and info.dataset_format == "messages"
    lite = wire.DEFAULT_CATALOG.get("gemini-3.1-flash-lite")
    assert lite is not None and "ADAPTER_SIZE_SIXTEEN" in lite.adapter_sizes


def test_dataset_uris() -> None:
    """Training data is required and must be gs:// or a dataset resource; so must validation."""
    assert "training_dataset_uri is required" in invalid(
        valid_job(supervisedTuningSpec={"hyperParameters": {"epochCount": 1}}))
    assert "supervised_tuning_spec is required" in invalid(
        {"baseModel": "gemini-2.5-flash"})
    for uri in ("https://x/y", "gs://bucket", "gs://bucket/", "/tmp/train.jsonl"):
        assert "training dataset URI" in invalid(
            valid_job(supervisedTuningSpec={"trainingDatasetUri": uri}))
    assert "validation dataset URI" in invalid(valid_job(supervisedTuningSpec={
        "trainingDatasetUri": "gs://b/t", "validationDatasetUri": "s3://b/v"}))


def test_hyper_parameter_ranges() -> None:
    """epochCount in [1, MAX_EPOCH_COUNT]; LRM and learningRate positive, finite, exclusive."""
    assert "epoch_count" in invalid(valid_job(supervisedTuningSpec=hp(epochCount=-1)))
    assert "epoch_count" in invalid(
        valid_job(supervisedTuningSpec=hp(epochCount=wire.MAX_EPOCH_COUNT + 1)))
    for bad in (-0.5, float("inf"), float("nan")):
        assert "learning_rate_multiplier" in invalid(
            valid_job(supervisedTuningSpec=hp(learningRateMultiplier=bad)))
    assert "cannot be set at the same time" in invalid(
        valid_job(supervisedTuningSpec=hp(learningRateMultiplier=1.0, learningRate=0.1)))


def test_display_name_length_in_code_points() -> None:
    """The display name limit counts Unicode code points, not bytes."""
    wire.validate_create(valid_job(tunedModelDisplayName="😀" * 128))
    assert "128" in invalid(valid_job(tunedModelDisplayName="x" * 129))


@pytest.mark.parametrize("labels", [
    {"Upper": "v"}, {"1abc": "v"}, {"": "v"}, {"a.b": "v"}, {"a" * 65: "v"},
    {"k": "UPPER"}, {"k": "a b"}, {"k": "v" * 65},
    {f"k{i}": "v" for i in range(65)},
])
def test_bad_labels(labels: dict[str, str]) -> None:
    """Label keys/values outside the spec §8 pattern, or more than 64 labels, are rejected."""
    assert "abel" in invalid(valid_job(labels=labels))


def test_reserved_label_prefix() -> None:
    """Keys under aiplatform.googleapis.com/ are reserved for the system."""
    assert "reserved" in invalid(valid_job(labels={"aiplatform.googleapis.com/x": "v"}))


def test_label_limits_at_the_edge() -> None:
    """64 labels, 64-character keys and values are still valid."""
    labels = {f"k{i}": "v" * 64 for i in range(63)} | {"k" * 64: ""}
    wire.validate_create(valid_job(labels=labels))


def test_filter_nesting_is_bounded_explicitly() -> None:
    """32 nested parentheses parse and evaluate; 33 are refused before any recursion limit."""
    inner = 'labels.team="ml"'
    ok = "(" * wire.MAX_FILTER_DEPTH + inner + ")" * wire.MAX_FILTER_DEPTH
    assert wire.compile_filter(ok)(JOB_A)
    chained = "(state=JOB_STATE_RUNNING AND " * 32 + inner + ")" * 32
    assert wire.compile_filter(chained)(JOB_A)
    too_deep = "(" * 33 + inner + ")" * 33
    assert "nested too deeply" in bad_filter(too_deep)
    assert "nested too deeply" in bad_filter("(" * 5000 + inner + ")" * 5000)


def test_page_token_is_bound_to_its_scope() -> None:
    """A token made for one parent is refused under another, and under no scope at all."""
    token = wire.encode_page_token("k", "f", "projects/p/locations/a")
    assert wire.decode_page_token(token, "f", "projects/p/locations/a") == "k"
    for scope in ("projects/p/locations/b", ""):
        with pytest.raises(InvalidArgument, match="Invalid page token"):
            wire.decode_page_token(token, "f", scope)


@pytest.mark.parametrize("value", ["9" * 5000, "²", "٣٣"])
def test_state_number_that_int_cannot_read_is_an_invalid_filter(value: str) -> None:
    """A state value of thousands of digits or of non-ASCII digits is an invalid filter, never a
    ValueError."""
    assert "unknown state value" in bad_filter(f"state={value}")
