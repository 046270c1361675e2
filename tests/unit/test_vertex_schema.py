"""The generated Vertex schema: fresh against the installed protos, complete, and per version."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import aiplatform_v1, aiplatform_v1beta1
from google.genai import _common
from google.genai import tunings as genai_tunings
from google.genai import types as genai_types

from tests.tools import gen_vertex_schema
from tuningd.vertex import wire
from tuningd.vertex.schema import schema


def test_committed_modules_match_the_installed_protos() -> None:
    """Regenerating the schema modules in memory gives exactly the committed text."""
    stale = gen_vertex_schema.stale_files()
    assert stale == [], (f"stale generated modules {stale}: run "
                         "`python -m tests.tools.gen_vertex_schema`")


@pytest.mark.parametrize(("version", "types"), [("v1", aiplatform_v1),
                                               ("v1beta1", aiplatform_v1beta1)])
def test_every_proto_field_is_in_the_schema(version: str, types: Any) -> None:
    """Every field the installed proto TuningJob reaches is in the schema with its JSON name."""
    messages, _ = gen_vertex_schema.collect(version)
    built = schema(version)
    for name, rows in messages.items():
        for proto, json_name, kind, _type, _flags in rows:
            field = built.messages[name].lookup[json_name]
            assert (field.proto, field.kind) == (proto, kind)
    assert types.TuningJob.pb().DESCRIPTOR.fields_by_name["base_model"] is not None


def test_versions_differ_where_the_protos_differ() -> None:
    """v1 lacks the v1beta1 kinds and sub-state fields; v1 and v1beta1 both know preference."""
    v1, beta = schema("v1").root.lookup, schema("v1beta1").root.lookup
    for name in ("distillationSpec", "veoTuningSpec", "veoLoraTuningSpec", "customBaseModel",
                 "partnerModelTuningSpec", "reinforcementTuningSpec", "fullFineTuningSpec",
                 "tuningJobState", "tuningJobMetadata", "outputUri", "pipelineJob"):
        assert name in beta and name not in v1, name
    for name in ("supervisedTuningSpec", "preferenceOptimizationSpec", "gcsMetricsUri",
                 "encryptionSpec", "serviceAccount", "evaluateDatasetRuns"):
        assert name in beta and name in v1, name
    assert set(schema("v1").root.oneofs["tuning_spec"]) != set()
    assert "video_metadata" in schema("v1").messages["Part"].lookup
    assert "fps" in schema("v1").messages["VideoMetadata"].lookup
    assert "fps" not in schema("v1beta1").messages["VideoMetadata"].lookup
    assert "fps" in schema(None).messages["VideoMetadata"].lookup


def test_output_only_markers_come_from_the_protos() -> None:
    """Output-only fields (top level and nested) are marked; inputs are not."""
    root = schema("v1beta1").root
    outputs = {f.json for f in root.fields if f.output}
    assert {"name", "state", "createTime", "error", "tunedModel", "tuningDataStats",
            "experiment", "pipelineJob", "evaluateDatasetRuns", "tuningJobState"} <= outputs
    assert not outputs & {"baseModel", "labels", "supervisedTuningSpec", "outputUri",
                          "serviceAccount", "encryptionSpec", "customBaseModel"}
    assert schema("v1").messages["PreTunedModel"].lookup["baseModel"].output
    assert wire.V1BETA1_ONLY_FIELDS and "distillationSpec" in wire.V1BETA1_ONLY_FIELDS


def _genai_body(method: str, **config: Any) -> dict[str, Any]:
    """The create body google-genai's own converter builds for a tuning method."""
    params = genai_types._CreateTuningJobParametersPrivate(
        base_model="gemini-2.5-flash",
        training_dataset=genai_types.TuningDataset(gcs_uri="gs://b/train.jsonl"),
        config=genai_types.CreateTuningJobConfig(method=method, **config))
    # What Tunings._tune does before it posts.
    body = genai_tunings._CreateTuningJobParametersPrivate_to_vertex(params, None, params)
    body.pop("config", None)
    return dict(_common.encode_unserializable_types(_common.convert_to_dict(body)))


_EVAL = genai_types.EvaluationConfig(
    metrics=[genai_types.Metric(name="bleu"), genai_types.Metric(name="rouge_1"),
             genai_types.Metric(name="p", prompt_template="t", return_raw_output=True,
                                judge_model_system_instruction="s")],
    output_config=genai_types.OutputConfig(
        gcs_destination=genai_types.GcsDestination(output_uri_prefix="gs://b/eval/")))
_COMMON = {"tuned_model_display_name": "x", "description": "d", "labels": {"k": "v"},
           "output_uri": "gs://b/out", "custom_base_model": "gs://b/w",
           "encryption_spec": genai_types.EncryptionSpec(kms_key_name="k"),
           "validation_dataset": genai_types.TuningValidationDataset(gcs_uri="gs://b/v.jsonl"),
           "epoch_count": 2, "learning_rate_multiplier": 1.0, "adapter_size": "ADAPTER_SIZE_FOUR"}
_REWARD = genai_types.SingleReinforcementTuningRewardConfig(
    reward_name="r",
    parse_response_config=genai_types.ReinforcementTuningParseResponseConfig(
        parse_type="REGEX_EXTRACT", regex_extract_expression=".*"),
    autorater_scorer=genai_types.ReinforcementTuningAutoraterScorer(
        autorater_config=genai_types.AutoraterConfig(autorater_model="m", sampling_count=1),
        autorater_prompt="p",
        exact_match_scorer=genai_types.ReinforcementTuningAutoraterScorerExactMatchScorer(
            correct_answer_reward=1.0, wrong_answer_reward=-1.0, expression="e")),
    string_match_reward_scorer=genai_types.ReinforcementTuningStringMatchRewardScorer(
        json_match_expression=genai_types.ReinforcementTuningStringMatchRewardScorerJsonMatchExpression(
            key_name="k",
            value_string_match_expression=genai_types.ReinforcementTuningStringMatchRewardScorerStringMatchExpression(
                match_operation="EXACT_MATCH", expression="e"))),
    code_execution_reward_scorer=genai_types.ReinforcementTuningCodeExecutionRewardScorer(
        python_code_snippet="def evaluate(e, r): return 1.0"),
    cloud_run_reward_scorer=genai_types.ReinforcementTuningCloudRunRewardScorer(
        cloud_run_uri="https://r.run.app"))


@pytest.mark.parametrize(("method", "config"), [
    ("SUPERVISED_FINE_TUNING", {**_COMMON, "export_last_checkpoint_only": True,
                                "tuning_mode": "TUNING_MODE_FULL", "batch_size": 4,
                                "evaluation_config": _EVAL}),
    ("PREFERENCE_TUNING", {**_COMMON, "beta": 0.5, "export_last_checkpoint_only": True,
                           "evaluation_config": _EVAL}),
    ("DISTILLATION", {**_COMMON, "base_teacher_model": "t", "tuning_mode": "TUNING_MODE_FULL",
                      "batch_size": 4, "sft_loss_weight_multiplier": 0.5,
                      "export_last_checkpoint_only": True, "evaluation_config": _EVAL}),
    ("REINFORCEMENT_TUNING", {**_COMMON, "batch_size": 4, "samples_per_prompt": 4,
                              "evaluate_interval": 10, "checkpoint_interval": 10,
                              "max_output_tokens": 2048, "thinking_level": "HIGH",
                              "reward_config": _REWARD}),
])
def test_every_field_google_genai_sends_is_known(method: str, config: dict[str, Any]) -> None:
    """The body google-genai's converter builds for each tuning method parses strictly at
    v1beta1 (nothing unknown) and renders back unchanged."""
    body = _genai_body(method, **config)
    job = wire.parse_tuning_job(body, api_version="v1beta1")
    rendered = wire.render_tuning_job(job, api_version="v1beta1")
    assert wire.parse_tuning_job(rendered, api_version="v1beta1") == job
    assert set(rendered) == set(body)
