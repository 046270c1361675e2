"""Example-based tests of tuningd.vertex.wire: parsing, rendering, errors, timestamps, envelope."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tuningd.core.errors import InvalidArgument, NotFound, PayloadTooLarge
from tuningd.vertex import wire

BASIC: dict[str, Any] = {
    "baseModel": "gemini-2.5-flash",
    "tunedModelDisplayName": "sentiment-v3",
    "labels": {"tuningd-job-id": "7f3c2a9e-0b1d-4c55-9a53-2f1e0c6d8b11", "managed-by": "tuningd"},
    "supervisedTuningSpec": {
        "trainingDatasetUri": "gs://my-bucket/sft/train.jsonl",
        "validationDatasetUri": "gs://my-bucket/sft/val.jsonl",
        "hyperParameters": {"epochCount": "3", "learningRateMultiplier": 1.0,
                            "adapterSize": "ADAPTER_SIZE_FOUR"},
        "exportLastCheckpointOnly": False,
    },
}


def _err(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(InvalidArgument) as info:
        fn(*args, **kw)
    return info.value.message


# ---------------------------------------------------------------- parsing


def test_parse_basic_camel_case_to_canonical() -> None:
    """The spec's create body parses into canonical form with int64 as int and defaults dropped."""
    job = wire.parse_tuning_job(BASIC)
    assert job["supervisedTuningSpec"] == {
        "trainingDatasetUri": "gs://my-bucket/sft/train.jsonl",
        "validationDatasetUri": "gs://my-bucket/sft/val.jsonl",
        "hyperParameters": {"epochCount": 3, "learningRateMultiplier": 1.0,
                            "adapterSize": "ADAPTER_SIZE_FOUR"},
    }
    assert job["labels"]["managed-by"] == "tuningd"


def test_parse_snake_case_equals_camel_case() -> None:
    """A snake_case body with int enums and numeric int64 parses to the same canonical job."""
    snake = {
        "base_model": "gemini-2.5-flash",
        "tuned_model_display_name": "sentiment-v3",
        "labels": {"tuningd-job-id": "7f3c2a9e-0b1d-4c55-9a53-2f1e0c6d8b11",
                   "managed-by": "tuningd"},
        "supervised_tuning_spec": {
            "training_dataset_uri": "gs://my-bucket/sft/train.jsonl",
            "validation_dataset_uri": "gs://my-bucket/sft/val.jsonl",
            "hyper_parameters": {"epoch_count": 3, "learning_rate_multiplier": "1",
                                 "adapter_size": 2},
        },
    }
    assert wire.parse_tuning_job(snake) == wire.parse_tuning_job(BASIC)


def test_label_keys_are_not_case_converted() -> None:
    """Map keys such as label keys stay exactly as given, even when they look like snake_case."""
    job = wire.parse_tuning_job({"labels": {"my_key": "v", "other-key": ""}})
    assert job["labels"] == {"my_key": "v", "other-key": ""}


def test_adapter_size_numbers_are_not_in_order() -> None:
    """AdapterSize numbers follow the proto (TWO=6, FOUR=2), both in and out."""
    job = wire.parse_tuning_job({"supervisedTuningSpec": {"hyperParameters": {"adapterSize": 6}}})
    assert job["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_TWO"
    out = wire.render_tuning_job({"supervisedTuningSpec": {"hyperParameters": {
        "adapterSize": "ADAPTER_SIZE_FOUR"}}}, enum_as_int=True)
    assert out["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == 2


def test_null_means_unset() -> None:
    """A JSON null for any field leaves it unset; a oneof member set to {} stays set (presence)."""
    job = wire.parse_tuning_job({"baseModel": None, "description": "d",
                                 "supervisedTuningSpec": {"hyperParameters": None}})
    assert job == {"description": "d", "supervisedTuningSpec": {}}
    assert wire.parse_tuning_job({"supervisedTuningSpec": None}) == {}


def test_int64_accepts_integral_float_and_rejects_fraction() -> None:
    """int64 takes a number or a string; 3.0 is integral, "3.5", 3.5 and "3.0" are rejected."""
    job = wire.parse_tuning_job({"tunedModel": {"checkpoints": [{"epoch": 3.0, "step": "-7"}]}})
    assert job["tunedModel"]["checkpoints"] == [{"epoch": 3, "step": -7}]
    for bad, shown in [("3.5", '"3.5"'), (3.5, "3.5"), ("3.0", '"3.0"'), (True, "true"),
                       (str(2**63), f'"{2**63}"')]:
        msg = _err(wire.parse_tuning_job,
                   {"supervisedTuningSpec": {"hyperParameters": {"epochCount": bad}}})
        assert msg == ("Invalid value at 'tuning_job.supervised_tuning_spec.hyper_parameters."
                       f"epoch_count' (TYPE_INT64), {shown}")


def test_double_accepts_numeric_strings_and_specials() -> None:
    """double takes numbers, numeric strings and proto3's "NaN"/"Infinity"/"-Infinity"."""
    def lrm(v: Any) -> Any:
        job = wire.parse_tuning_job(
            {"supervisedTuningSpec": {"hyperParameters": {"learningRateMultiplier": v}}})
        return job["supervisedTuningSpec"]["hyperParameters"]["learningRateMultiplier"]

    assert lrm("2.5") == 2.5
    assert lrm(2) == 2.0 and isinstance(lrm(2), float)
    assert lrm("1e-3") == 0.001
    assert lrm("Infinity") == math.inf
    assert lrm("-Infinity") == -math.inf
    assert math.isnan(lrm("NaN"))
    assert "(TYPE_DOUBLE)" in _err(lrm, math.inf)
    assert "(TYPE_DOUBLE)" in _err(lrm, "1e400")
    msg = _err(lrm, "abc")
    assert msg.endswith("learning_rate_multiplier' (TYPE_DOUBLE), \"abc\"")


def test_unknown_field_message_names_snake_case_path() -> None:
    """An unknown field is rejected with Google's wording and the snake_case parent path."""
    msg = _err(wire.parse_tuning_job, {"supervisedTuningSpec": {"fooBar": 1}})
    assert msg == ('Invalid JSON payload received. Unknown name "fooBar" at '
                   "'tuning_job.supervised_tuning_spec': Cannot find field.")
    msg = _err(wire.parse_tuning_job, {"fooBar": 1})
    assert msg == ('Invalid JSON payload received. Unknown name "fooBar" at '
                   "'tuning_job': Cannot find field.")


def test_unknown_fields_dropped_when_ignored() -> None:
    """With ignore_unknown, unknown fields at any level are dropped silently."""
    job = wire.parse_tuning_job({"x": 1, "supervisedTuningSpec": {"y": {}, "trainingDatasetUri":
                                 "gs://b/o"}}, ignore_unknown=True)
    assert job == {"supervisedTuningSpec": {"trainingDatasetUri": "gs://b/o"}}


def test_unknown_enum_values_dropped_when_ignored() -> None:
    """With ignore_unknown, enum values newer than the schema are dropped like unknown fields."""
    job = wire.parse_tuning_job({"state": "JOB_STATE_FROM_THE_FUTURE", "tuningJobState": 42,
                                 "description": "d"}, ignore_unknown=True)
    assert job == {"description": "d"}
    assert "(TYPE_STRING)" not in _err(wire.parse_tuning_job, {"state": True},
                                       ignore_unknown=True)


def test_v1_parse_rejects_v1beta1_only_fields() -> None:
    """With api_version="v1", v1beta1-only fields are unknown; by default they are accepted."""
    body = {"supervisedTuningSpec": {"tuningMode": "TUNING_MODE_FULL"}}
    assert wire.parse_tuning_job(body)["supervisedTuningSpec"]["tuningMode"] == "TUNING_MODE_FULL"
    msg = _err(wire.parse_tuning_job, body, api_version="v1")
    assert 'Unknown name "tuningMode"' in msg


def test_bad_enum_message() -> None:
    """A bad enum name names the field path and the enum's type URL."""
    msg = _err(wire.parse_tuning_job, {"supervisedTuningSpec": {"hyperParameters": {
        "adapterSize": "ADAPTER_SIZE_FIVE"}}})
    assert msg == ("Invalid value at 'tuning_job.supervised_tuning_spec.hyper_parameters."
                   "adapter_size' (type.googleapis.com/google.cloud.aiplatform.v1."
                   'SupervisedHyperParameters.AdapterSize), "ADAPTER_SIZE_FIVE"')
    msg = _err(wire.parse_tuning_job, {"state": 99})
    assert msg == ("Invalid value at 'tuning_job.state' "
                   "(type.googleapis.com/google.cloud.aiplatform.v1.JobState), 99")


def test_wrong_types_are_rejected() -> None:
    """Strings, bools, messages, maps and lists reject values of the wrong JSON type."""
    assert _err(wire.parse_tuning_job, {"baseModel": 5}) == (
        "Invalid value at 'tuning_job.base_model' (TYPE_STRING), 5")
    assert "(TYPE_BOOL)" in _err(wire.parse_tuning_job,
                                 {"supervisedTuningSpec": {"exportLastCheckpointOnly": 1}})
    assert "SupervisedTuningSpec), \"x\"" in _err(wire.parse_tuning_job,
                                                   {"supervisedTuningSpec": "x"})
    assert "'tuning_job.labels[k]' (TYPE_STRING), 1" in _err(
        wire.parse_tuning_job, {"labels": {"k": 1}})
    assert "Proto field is not repeating, cannot start list." in _err(
        wire.parse_tuning_job, {"baseModel": ["a"]})
    assert "tuning_job.tuned_model.checkpoints" in _err(
        wire.parse_tuning_job, {"tunedModel": {"checkpoints": {"epoch": 1}}})
    assert "checkpoints[1].epoch' (TYPE_INT64)" in _err(
        wire.parse_tuning_job, {"tunedModel": {"checkpoints": [{}, {"epoch": "x"}]}})


def test_top_level_must_be_object() -> None:
    """A body that is not a JSON object is rejected."""
    for body in ([], "x", 3, None):
        assert _err(wire.parse_tuning_job, body).startswith(
            "Invalid JSON payload received. Expected an object")


def test_duplicate_dialect_names_rejected() -> None:
    """The same field given in both camelCase and snake_case is rejected."""
    msg = _err(wire.parse_tuning_job, {"baseModel": "a", "base_model": "b"})
    assert "Duplicate field" in msg


def test_free_form_objects_pass_through() -> None:
    """Any (error.details), Struct and Value fields pass through untouched; messages such as
    evaluationConfig are parsed like any other, unknown names included."""
    job = wire.parse_tuning_job({
        "error": {"code": 3, "details": [{"@type": "x", "a_b": 1}]},
        "evaluateDatasetRuns": [{"operationName": "o"}],
        "partnerModelTuningSpec": {"hyperParameters": {"lr": 0.1, "a_b": [1, None], "n": None}},
        "supervisedTuningSpec": {"evaluationConfig": {"metrics": [{
            "pointwiseMetricSpec": {"metric_prompt_template": "t"},
            "predefinedMetricSpec": {"metricSpecParameters": {"x_y": {"z": None}}}}]}},
    })
    assert job["error"] == {"code": 3, "details": [{"@type": "x", "a_b": 1}]}
    assert job["partnerModelTuningSpec"]["hyperParameters"] == {"lr": 0.1, "a_b": [1, None],
                                                                "n": None}
    metric = job["supervisedTuningSpec"]["evaluationConfig"]["metrics"][0]
    assert metric["pointwiseMetricSpec"] == {"metricPromptTemplate": "t"}
    assert metric["predefinedMetricSpec"]["metricSpecParameters"] == {"x_y": {"z": None}}
    rendered = wire.render_tuning_job(job, api_version="v1beta1")
    assert rendered["partnerModelTuningSpec"]["hyperParameters"]["n"] is None
    assert wire.parse_tuning_job(rendered) == job
    msg = _err(wire.parse_tuning_job, {"supervisedTuningSpec": {"evaluationConfig": {
        "metrics": [{"aggregationMetrics": ["AVERAGE"], "some_snake": None}]}}})
    assert msg == ('Invalid JSON payload received. Unknown name "some_snake" at '
                   "'tuning_job.supervised_tuning_spec.evaluation_config.metrics[0]': "
                   "Cannot find field.")


def test_timestamps_canonicalised() -> None:
    """Timestamps with 0-9 fraction digits or offsets become UTC microsecond text with Z."""
    cases = {
        "2025-06-02T10:15:03Z": "2025-06-02T10:15:03.000000Z",
        "2025-06-02T10:15:03.418Z": "2025-06-02T10:15:03.418000Z",
        "2025-06-02T10:15:03.418225123Z": "2025-06-02T10:15:03.418225Z",
        "2025-06-02T12:15:03.5+02:00": "2025-06-02T10:15:03.500000Z",
    }
    for given, want in cases.items():
        assert wire.parse_tuning_job({"createTime": given}) == {"createTime": want}
    assert "google.protobuf.Timestamp" in _err(wire.parse_tuning_job,
                                               {"createTime": "2025-13-01T00:00:00Z"})


def test_format_and_parse_timestamp() -> None:
    """format_timestamp and parse_timestamp are inverse at microsecond precision."""
    assert wire.format_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    text = wire.format_timestamp(1748859303.418225)
    assert text == "2025-06-02T10:15:03.418225Z"
    assert wire.parse_timestamp(text) == pytest.approx(1748859303.418225, abs=1e-6)
    assert wire.parse_timestamp("1970-01-01T01:00:00+01:00") == 0.0
    for bad in ("", "2025-06-02", "2025-06-02T10:15:03", "yesterday", "2025-06-02T25:00:00Z"):
        _err(wire.parse_timestamp, bad)


# ---------------------------------------------------------------- rendering


def test_render_proto3_json() -> None:
    """Rendering uses camelCase, int64 strings, enum names, and omits defaults."""
    job = wire.parse_tuning_job(BASIC)
    job["state"] = "JOB_STATE_PENDING"
    job["error"] = {"code": 1, "message": "Tuning job was cancelled."}
    out = wire.render_tuning_job(job)
    hp = out["supervisedTuningSpec"]["hyperParameters"]
    assert hp == {"epochCount": "3", "learningRateMultiplier": 1.0,
                  "adapterSize": "ADAPTER_SIZE_FOUR"}
    assert out["state"] == "JOB_STATE_PENDING"
    assert out["error"] == {"code": 1, "message": "Tuning job was cancelled."}
    assert "exportLastCheckpointOnly" not in out["supervisedTuningSpec"]
    ints = wire.render_tuning_job(job, enum_as_int=True)
    assert ints["state"] == 2


def test_render_omits_empty_values() -> None:
    """Empty strings, zeros, false, empty lists/maps/messages and UNSPECIFIED enums are omitted;
    a oneof member stays, even when empty (its presence says which member is set)."""
    out = wire.render_tuning_job({
        "description": "", "labels": {}, "state": "JOB_STATE_UNSPECIFIED",
        "supervisedTuningSpec": {"hyperParameters": {"epochCount": 0}},
        "tunedModel": {"checkpoints": []}, "satisfiesPzs": False,
    }, api_version="v1beta1")
    assert out == {"supervisedTuningSpec": {}}


def test_render_special_doubles_as_strings() -> None:
    """Non-finite doubles render as proto3's string spellings."""
    out = wire.render_tuning_job({"supervisedTuningSpec": {"hyperParameters": {
        "learningRateMultiplier": math.inf}}})
    assert out["supervisedTuningSpec"]["hyperParameters"]["learningRateMultiplier"] == "Infinity"


def test_render_v1_drops_v1beta1_fields() -> None:
    """v1 rendering drops the v1beta1-only fields that v1beta1 rendering keeps."""
    job = {
        "tuningJobState": "TUNING_JOB_STATE_TUNING",
        "tuningJobMetadata": {"completedEpochCount": 1},
        "pipelineJob": "p", "customBaseModel": "c", "outputUri": "gs://o/",
        "satisfiesPzs": True, "satisfiesPzi": True,
        "supervisedTuningSpec": {"tuningMode": "TUNING_MODE_FULL",
                                 "hyperParameters": {"learningRate": 0.1, "batchSize": 8}},
        "description": "kept",
    }
    assert wire.render_tuning_job(job, api_version="v1") == {"description": "kept",
                                                             "supervisedTuningSpec": {}}
    beta = wire.render_tuning_job(job, api_version="v1beta1")
    assert beta["tuningJobMetadata"] == {"completedEpochCount": "1"}
    assert beta["supervisedTuningSpec"]["hyperParameters"]["batchSize"] == "8"
    assert wire.parse_tuning_job(beta) == job


def test_strip_output_only() -> None:
    """strip_output_only removes output-only fields at every level and keeps inputs."""
    job = wire.parse_tuning_job(BASIC) | {
        "name": "projects/1/locations/l/tuningJobs/2", "state": "JOB_STATE_RUNNING",
        "createTime": "2025-06-02T10:15:03.418225Z", "error": {"code": 1},
        "preTunedModel": {"tunedModelName": "projects/p/locations/l/models/m",
                          "baseModel": "gemini-2.5-flash"},
        "tuningJobState": "TUNING_JOB_STATE_TUNING",
    }
    stripped = wire.strip_output_only(job)
    assert stripped == wire.parse_tuning_job(BASIC) | {
        "preTunedModel": {"tunedModelName": "projects/p/locations/l/models/m"}}


# ---------------------------------------------------------------- body, envelope, query


def test_parse_json_body_errors() -> None:
    """Malformed JSON gets Google's 'Unexpected token.' message with a caret at the position."""
    msg = _err(wire.parse_json_body, b'{"a": tru}')
    assert msg.startswith("Invalid JSON payload received. Unexpected token.")
    assert msg.splitlines()[1:] == ['{"a": tru}', "      ^"]
    assert _err(wire.parse_json_body, b'{"a": NaN}').startswith(
        "Invalid JSON payload received. Unexpected token.")
    assert "UTF-8" in _err(wire.parse_json_body, b'{"a": "\xff"}')
    assert wire.parse_json_body(b"  ") == {}
    assert wire.parse_json_body(b'{"a": [1]}') == {"a": [1]}


def test_error_envelope() -> None:
    """The envelope carries HTTP code, message, status name and details when present."""
    assert wire.error_envelope(NotFound("nope")) == {
        "error": {"code": 404, "message": "nope", "status": "NOT_FOUND"}}
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R"}]
    env = wire.error_envelope(InvalidArgument("bad", details=details))
    assert env["error"]["details"] == details and env["error"]["code"] == 400


def test_error_envelope_413_keeps_invalid_argument() -> None:
    """A payload-too-large error is HTTP 413 with status INVALID_ARGUMENT."""
    env = wire.error_envelope(PayloadTooLarge("Request payload size exceeds the limit."))
    assert env["error"]["code"] == 413 and env["error"]["status"] == "INVALID_ARGUMENT"


def test_wants_int_enums() -> None:
    """`$alt` or `alt` with enum-encoding=int asks for int enums, in any case or order."""
    assert wire.wants_int_enums({"$alt": "json;enum-encoding=int"})
    assert wire.wants_int_enums({"alt": "JSON; Enum-Encoding=INT"})
    assert wire.wants_int_enums({"$alt": "enum-encoding=int;json"})
    assert not wire.wants_int_enums({"$alt": "json"})
    assert not wire.wants_int_enums({"filter": "enum-encoding=int"})
    assert not wire.wants_int_enums({})


def test_parse_page_size() -> None:
    """pageSize: absent/0 -> default, capped at maximum, negative or non-int rejected."""
    assert wire.parse_page_size(None) == 50
    assert wire.parse_page_size("0") == 50
    assert wire.parse_page_size("7") == 7
    assert wire.parse_page_size("1000") == 100
    assert wire.parse_page_size("5", default=2, maximum=3) == 3
    for bad in ("-1", "abc", "2.5"):
        _err(wire.parse_page_size, bad)


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"a": 1, "a": 2}', 'Duplicate key "a"'),
    (b'{"labels": {"k": "v", "k": "w"}}', 'Duplicate key "k"'),
    (b"1" * 5000, "Number out of range"),
    (b'{"epochCount": 1' + b"0" * 400 + b"}", "Number out of range"),
    (b'{"lr": 1e400}', "Number out of range"),
    (b'{"lr": -1e400}', "Number out of range"),
    (b"[" * 101 + b"]" * 101, "Message too deep"),
    (b'{"a":' * 150 + b"1" + b"}" * 150, "Message too deep"),
    (b"[" * 100_000 + b"]" * 100_000, "Message too deep"),
    (b'{"tunedModelDisplayName": "\\ud800"}', "surrogate"),
    (b'{"\\udc00": 1}', "surrogate"),
])
def test_parse_json_body_refuses_what_no_proto_parser_accepts(raw: bytes, fragment: str) -> None:
    """Duplicate keys, unrepresentable numbers, nesting past 100 and lone surrogates are
    InvalidArgument, never a crash (RecursionError/ValueError) or a silent last-key-wins."""
    msg = _err(wire.parse_json_body, raw)
    assert msg.startswith("Invalid JSON payload received.")
    assert fragment in msg


def test_parse_json_body_accepts_the_edges() -> None:
    """Depth 100, 309-digit integers, surrogate pairs and large finite doubles still parse."""
    assert wire.parse_json_body(b"[" * 100 + b"]" * 100) is not None
    assert wire.parse_json_body(b"1" + b"0" * 308) == 10**308
    assert wire.parse_json_body(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert wire.parse_json_body(b"1.5e308") == 1.5e308


def test_parse_empty_request() -> None:
    """A body-less request message accepts {} only (unknown names too when told to)."""
    wire.parse_empty_request({})
    wire.parse_empty_request({"x": 1}, ignore_unknown=True)
    assert "Unknown name \"x\"" in _err(wire.parse_empty_request, {"x": 1})
    assert "Expected an object" in _err(wire.parse_empty_request, [1])
    assert "got null" in _err(wire.parse_empty_request, None)


@pytest.mark.parametrize("digits", ["9" * 5000, "-" + "9" * 5000, "1" + "0" * 20])
def test_int64_string_past_pythons_digit_limit_is_a_400(digits: str) -> None:
    """An int64 as a string of thousands of digits (past Python's 4,300-digit int() limit) is
    400 INVALID_ARGUMENT naming the field, never a ValueError."""
    body = {"baseModel": "gemini-2.5-flash", "supervisedTuningSpec": {
        "trainingDatasetUri": "gs://b/t", "hyperParameters": {"epochCount": digits}}}
    with pytest.raises(InvalidArgument, match="epoch_count"):
        wire.parse_tuning_job(body)


def test_int64_string_with_leading_zeros_still_parses() -> None:
    """Leading zeros do not count against the digit bound: "000...03" is 3."""
    body = {"baseModel": "gemini-2.5-flash", "supervisedTuningSpec": {
        "trainingDatasetUri": "gs://b/t", "hyperParameters": {"epochCount": "0" * 40 + "3"}}}
    assert wire.parse_tuning_job(body)["supervisedTuningSpec"]["hyperParameters"] == {
        "epochCount": 3}
