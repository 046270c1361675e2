"""Hand-kept additions to the generated Vertex schema: what Vertex has beyond the 2.7.0 protos.

Rows have the generated modules' format (tuningd/vertex/schema.py explains it). Each entry cites
its source:
  [spec]  shared/spec/vertex-tuning-api.md §2, from the discovery documents rev 20261106;
  [genai] google-genai 2.34 `types.py` (the pydantic class named) and the `tunings.py`
          converters (`_CreateTuningJobConfig_to_vertex`, `_TuningJob_from_vertex`, ...).
genai does not say which API version has a field, nor int32 from int64, nor enum numbers: where
the spec is silent, a field goes to v1beta1 only (genai's default version), counts are int64 like
their siblings in the protos, and enum numbers follow genai's declaration order. Such inferences
are marked "inferred".
"""

from __future__ import annotations

Row = tuple[str, str, str, str, str]

_ADAPTER = "SupervisedHyperParameters.AdapterSize"

# ----------------------------------------------------------------------- both versions

# [spec] "v1 disc also has preferenceOptimizationSpec"; [genai] PreferenceOptimizationSpec,
# PreferenceOptimizationHyperParameters (its AdapterSize has SupervisedHyperParameters' names;
# the numbers are inferred to match).
_PREFERENCE_MESSAGES: dict[str, tuple[Row, ...]] = {
    "PreferenceOptimizationSpec": (
        ("training_dataset_uri", "trainingDatasetUri", "string", "", "required"),
        ("validation_dataset_uri", "validationDatasetUri", "string", "", ""),
        ("hyper_parameters", "hyperParameters", "message",
         "PreferenceOptimizationHyperParameters", ""),
        ("export_last_checkpoint_only", "exportLastCheckpointOnly", "bool", "", ""),
        # [genai] _CreateTuningJobConfig_to_vertex writes it for PREFERENCE_TUNING.
        ("evaluation_config", "evaluationConfig", "message", "EvaluationConfig", ""),
    ),
    "PreferenceOptimizationHyperParameters": (
        ("epoch_count", "epochCount", "int64", "", ""),
        ("learning_rate_multiplier", "learningRateMultiplier", "double", "", ""),
        ("adapter_size", "adapterSize", "enum", _ADAPTER, ""),
        ("beta", "beta", "double", "", ""),
    ),
    # [genai] PreferenceOptimizationDataStats, GeminiPreferenceExample(Completion).
    "PreferenceOptimizationDataStats": (
        ("tuning_dataset_example_count", "tuningDatasetExampleCount", "int64", "", "output"),
        ("total_billable_token_count", "totalBillableTokenCount", "int64", "", "output"),
        ("tuning_step_count", "tuningStepCount", "int64", "", "output"),
        ("user_input_token_distribution", "userInputTokenDistribution", "message",
         "DatasetDistribution", "output"),
        ("user_output_token_distribution", "userOutputTokenDistribution", "message",
         "DatasetDistribution", "output"),
        ("scores_distribution", "scoresDistribution", "message", "DatasetDistribution",
         "output"),
        ("score_variance_per_example_distribution", "scoreVariancePerExampleDistribution",
         "message", "DatasetDistribution", "output"),
        ("user_dataset_examples", "userDatasetExamples", "message", "GeminiPreferenceExample",
         "repeated output"),
        ("dropped_example_indices", "droppedExampleIndices", "int64", "", "repeated output"),
        ("dropped_example_reasons", "droppedExampleReasons", "string", "", "repeated output"),
    ),
    "GeminiPreferenceExample": (
        ("contents", "contents", "message", "Content", "repeated output"),
        ("completions", "completions", "message", "GeminiPreferenceExample.Completion",
         "repeated output"),
    ),
    "GeminiPreferenceExample.Completion": (
        ("completion", "completion", "message", "Content", "output"),
        ("score", "score", "float", "", "output"),
    ),
}

_BOTH_FIELDS: dict[str, tuple[Row, ...]] = {
    "TuningJob": (
        ("preference_optimization_spec", "preferenceOptimizationSpec", "message",
         "PreferenceOptimizationSpec", "oneof=tuning_spec"),
        # [spec] "gcsMetricsUri ... in disc v1/v1beta1 (not yet in 2.7.0 proto)".
        ("gcs_metrics_uri", "gcsMetricsUri", "string", "", "output"),
    ),
    # [genai] TuningDataStats.preference_optimization_data_stats.
    "TuningDataStats": (
        ("preference_optimization_data_stats", "preferenceOptimizationDataStats", "message",
         "PreferenceOptimizationDataStats", "output oneof=tuning_data_stats"),
    ),
}

# v1's protos lack DatasetDistribution (v1beta1 has it), which preference stats use: the same
# rows as v1beta1's generated ones.
_V1_DISTRIBUTION: dict[str, tuple[Row, ...]] = {
    "DatasetDistribution": (
        ("sum", "sum", "double", "", "output"),
        ("min", "min", "double", "", "output"),
        ("max", "max", "double", "", "output"),
        ("mean", "mean", "double", "", "output"),
        ("median", "median", "double", "", "output"),
        ("p5", "p5", "double", "", "output"),
        ("p95", "p95", "double", "", "output"),
        ("buckets", "buckets", "message", "DatasetDistribution.DistributionBucket",
         "repeated output"),
    ),
    "DatasetDistribution.DistributionBucket": (
        ("count", "count", "int64", "", "output"),
        ("left", "left", "double", "", "output"),
        ("right", "right", "double", "", "output"),
    ),
}

# ----------------------------------------------------------------------- v1beta1 only

_BETA_FIELDS: dict[str, tuple[Row, ...]] = {
    "TuningJob": (
        # [spec] "v1beta1 also has ... reinforcementTuningSpec, fullFineTuningSpec".
        ("reinforcement_tuning_spec", "reinforcementTuningSpec", "message",
         "ReinforcementTuningSpec", "oneof=tuning_spec"),
        ("full_fine_tuning_spec", "fullFineTuningSpec", "message", "FullFineTuningSpec",
         "oneof=tuning_spec"),
        # [spec] tuningJobState, tuningJobMetadata: "v1beta1 only"; satisfiesPzs/Pzi: v1beta1 disc.
        ("tuning_job_state", "tuningJobState", "enum", "TuningJob.TuningJobState", "output"),
        ("tuning_job_metadata", "tuningJobMetadata", "message", "TuningJobMetadata", "output"),
        ("satisfies_pzs", "satisfiesPzs", "bool", "", "output"),
        ("satisfies_pzi", "satisfiesPzi", "bool", "", "output"),
        # [genai] _TuningJob_from_vertex reads both; neither is documented output only.
        ("evaluation_config", "evaluationConfig", "message", "EvaluationConfig", ""),
        ("distillation_sampling_spec", "distillationSamplingSpec", "message",
         "DistillationSamplingSpec", ""),
    ),
    # [genai] DistillationSpec, and _CreateTuningJobConfig_to_vertex for DISTILLATION (which
    # sends the dataset as promptDatasetUri; trainingDatasetUri is "Deprecated").
    "DistillationSpec": (
        ("prompt_dataset_uri", "promptDatasetUri", "string", "", ""),
        ("tuning_mode", "tuningMode", "enum", "SupervisedTuningSpec.TuningMode", ""),
        ("export_last_checkpoint_only", "exportLastCheckpointOnly", "bool", "", ""),
        ("evaluation_config", "evaluationConfig", "message", "EvaluationConfig", ""),
    ),
    # [genai] DistillationHyperParameters; sftLossWeightMultiplier from the converter.
    "DistillationHyperParameters": (
        ("learning_rate", "learningRate", "double", "", ""),
        ("batch_size", "batchSize", "int64", "", ""),
        ("generation_config", "generationConfig", "message", "GenerationConfig", ""),
        ("sft_loss_weight_multiplier", "sftLossWeightMultiplier", "double", "", ""),
    ),
    # [genai] TuningDataStats.reinforcement_tuning_data_stats (a DatasetStats).
    "TuningDataStats": (
        ("reinforcement_tuning_data_stats", "reinforcementTuningDataStats", "message",
         "DatasetStats", "output oneof=tuning_data_stats"),
    ),
    # [genai] DatasetStats.
    "DatasetStats": (
        ("total_billable_token_count", "totalBillableTokenCount", "int64", "", "output"),
        ("contents_per_example_distribution", "contentsPerExampleDistribution", "message",
         "DatasetDistribution", "output"),
        ("dropped_example_indices", "droppedExampleIndices", "int64", "", "repeated output"),
        ("dropped_example_reasons", "droppedExampleReasons", "string", "", "repeated output"),
        ("reinforcement_tuning_user_dataset_examples", "reinforcementTuningUserDatasetExamples",
         "message", "ReinforcementTuningUserDatasetExamples", "output"),
    ),
    # [genai] VeoLoraTuningSpec.video_orientation.
    "VeoLoraTuningSpec": (
        ("video_orientation", "videoOrientation", "enum", "VeoLoraTuningSpec.VideoOrientation",
         ""),
    ),
}

_BETA_MESSAGES: dict[str, tuple[Row, ...]] = {
    # [genai] TuningJobMetadata.
    "TuningJobMetadata": (
        ("completed_epoch_count", "completedEpochCount", "int64", "", "output"),
        ("completed_step_count", "completedStepCount", "int64", "", "output"),
    ),
    # [genai] FullFineTuningSpec.
    "FullFineTuningSpec": (
        ("training_dataset_uri", "trainingDatasetUri", "string", "", "required"),
        ("validation_dataset_uri", "validationDatasetUri", "string", "", ""),
        ("hyper_parameters", "hyperParameters", "message", "SupervisedHyperParameters", ""),
    ),
    # [genai] DistillationSamplingSpec (its hyperparameters key is all lower case).
    "DistillationSamplingSpec": (
        ("base_teacher_model", "baseTeacherModel", "string", "", ""),
        ("tuned_teacher_model_source", "tunedTeacherModelSource", "string", "", ""),
        ("prompt_dataset_uri", "promptDatasetUri", "string", "", ""),
        ("validation_dataset_uri", "validationDatasetUri", "string", "", ""),
        ("hyperparameters", "hyperparameters", "message", "DistillationHyperParameters", ""),
    ),
    # [genai] ReinforcementTuningSpec and the reward configs below; int32 for the token and
    # thinking budgets (as GenerationConfig has them) is inferred.
    "ReinforcementTuningSpec": (
        ("training_dataset_uri", "trainingDatasetUri", "string", "", "required"),
        ("validation_dataset_uri", "validationDatasetUri", "string", "", ""),
        ("hyper_parameters", "hyperParameters", "message", "ReinforcementTuningHyperParameters",
         ""),
        ("single_reward_config", "singleRewardConfig", "message",
         "SingleReinforcementTuningRewardConfig", ""),
        ("composite_reward_config", "compositeRewardConfig", "message",
         "CompositeReinforcementTuningRewardConfig", ""),
    ),
    "ReinforcementTuningHyperParameters": (
        ("epoch_count", "epochCount", "int64", "", ""),
        ("step_count", "stepCount", "int64", "", ""),
        ("learning_rate_multiplier", "learningRateMultiplier", "double", "", ""),
        ("adapter_size", "adapterSize", "enum", _ADAPTER, ""),
        ("samples_per_prompt", "samplesPerPrompt", "int64", "", ""),
        ("batch_size", "batchSize", "int64", "", ""),
        ("evaluate_interval", "evaluateInterval", "int64", "", ""),
        ("checkpoint_interval", "checkpointInterval", "int64", "", ""),
        ("max_output_tokens", "maxOutputTokens", "int32", "", ""),
        ("thinking_level", "thinkingLevel", "enum",
         "ReinforcementTuningHyperParameters.ThinkingLevel", ""),
        ("thinking_budget", "thinkingBudget", "int32", "", ""),
    ),
    "SingleReinforcementTuningRewardConfig": (
        ("reward_name", "rewardName", "string", "", ""),
        ("parse_response_config", "parseResponseConfig", "message",
         "ReinforcementTuningParseResponseConfig", ""),
        ("autorater_scorer", "autoraterScorer", "message", "ReinforcementTuningAutoraterScorer",
         ""),
        ("code_execution_reward_scorer", "codeExecutionRewardScorer", "message",
         "ReinforcementTuningCodeExecutionRewardScorer", ""),
        ("string_match_reward_scorer", "stringMatchRewardScorer", "message",
         "ReinforcementTuningStringMatchRewardScorer", ""),
        ("cloud_run_reward_scorer", "cloudRunRewardScorer", "message",
         "ReinforcementTuningCloudRunRewardScorer", ""),
    ),
    "CompositeReinforcementTuningRewardConfig": (
        ("weighted_reward_configs", "weightedRewardConfigs", "message",
         "CompositeReinforcementTuningRewardConfig.WeightedRewardConfig", "repeated"),
    ),
    "CompositeReinforcementTuningRewardConfig.WeightedRewardConfig": (
        ("reward_config", "rewardConfig", "message", "SingleReinforcementTuningRewardConfig", ""),
        ("weight", "weight", "double", "", ""),
    ),
    "ReinforcementTuningParseResponseConfig": (
        ("parse_type", "parseType", "enum",
         "ReinforcementTuningParseResponseConfig.ResponseParseType", ""),
        ("regex_extract_expression", "regexExtractExpression", "string", "", ""),
    ),
    "ReinforcementTuningAutoraterScorer": (
        ("autorater_config", "autoraterConfig", "message", "AutoraterConfig", ""),
        ("autorater_prompt", "autoraterPrompt", "string", "", ""),
        ("autorater_response_parse_config", "autoraterResponseParseConfig", "message",
         "ReinforcementTuningParseResponseConfig", ""),
        ("parsed_response_conversion_scorer", "parsedResponseConversionScorer", "message",
         "ReinforcementTuningAutoraterScorer.ParsedResponseConversionScorer", ""),
        ("exact_match_scorer", "exactMatchScorer", "message",
         "ReinforcementTuningAutoraterScorer.ExactMatchScorer", ""),
    ),
    # genai's class has no fields: choosing it is the whole setting.
    "ReinforcementTuningAutoraterScorer.ParsedResponseConversionScorer": (),
    "ReinforcementTuningAutoraterScorer.ExactMatchScorer": (
        ("correct_answer_reward", "correctAnswerReward", "double", "", ""),
        ("wrong_answer_reward", "wrongAnswerReward", "double", "", ""),
        ("expression", "expression", "string", "", ""),
    ),
    "ReinforcementTuningCodeExecutionRewardScorer": (
        ("python_code_snippet", "pythonCodeSnippet", "string", "", ""),
    ),
    "ReinforcementTuningStringMatchRewardScorer": (
        ("correct_answer_reward", "correctAnswerReward", "double", "", ""),
        ("wrong_answer_reward", "wrongAnswerReward", "double", "", ""),
        ("string_match_expression", "stringMatchExpression", "message",
         "ReinforcementTuningStringMatchRewardScorer.StringMatchExpression", ""),
        ("json_match_expression", "jsonMatchExpression", "message",
         "ReinforcementTuningStringMatchRewardScorer.JsonMatchExpression", ""),
    ),
    "ReinforcementTuningStringMatchRewardScorer.StringMatchExpression": (
        ("match_operation", "matchOperation", "enum",
         "ReinforcementTuningStringMatchRewardScorer.MatchOperation", ""),
        ("expression", "expression", "string", "", ""),
    ),
    "ReinforcementTuningStringMatchRewardScorer.JsonMatchExpression": (
        ("key_name", "keyName", "string", "", ""),
        ("value_string_match_expression", "valueStringMatchExpression", "message",
         "ReinforcementTuningStringMatchRewardScorer.StringMatchExpression", ""),
    ),
    "ReinforcementTuningCloudRunRewardScorer": (
        ("cloud_run_uri", "cloudRunUri", "string", "", ""),
    ),
    # [genai] ReinforcementTuningUserDatasetExamples / ReinforcementTuningExample. Its `tools`
    # are Tool messages, a schema of their own that no other field here reaches: kept as free
    # JSON objects (Struct), an approximation.
    "ReinforcementTuningUserDatasetExamples": (
        ("user_dataset_examples", "userDatasetExamples", "message",
         "ReinforcementTuningExample", "repeated output"),
    ),
    "ReinforcementTuningExample": (
        ("contents", "contents", "message", "Content", "repeated output"),
        ("references", "references", "string", "", "map output"),
        ("system_instruction", "systemInstruction", "message", "Content", "output"),
        ("tools", "tools", "struct", "", "repeated output"),
    ),
}

_BETA_ENUMS: dict[str, tuple[tuple[str, int], ...]] = {
    # [spec] TUNING_JOB_STATE_* with these numbers (disc v1beta1).
    "TuningJob.TuningJobState": (
        ("TUNING_JOB_STATE_UNSPECIFIED", 0),
        ("TUNING_JOB_STATE_WAITING_FOR_QUOTA", 1),
        ("TUNING_JOB_STATE_PROCESSING_DATASET", 2),
        ("TUNING_JOB_STATE_WAITING_FOR_CAPACITY", 3),
        ("TUNING_JOB_STATE_TUNING", 4),
        ("TUNING_JOB_STATE_POST_PROCESSING", 5),
    ),
    # [genai] the enums below; numbers inferred (declaration order).
    "ReinforcementTuningHyperParameters.ThinkingLevel": (
        ("REINFORCEMENT_TUNING_THINKING_LEVEL_UNSPECIFIED", 0),
        ("MINIMAL", 1),
        ("HIGH", 2),
    ),
    "ReinforcementTuningParseResponseConfig.ResponseParseType": (
        ("RESPONSE_PARSE_TYPE_UNSPECIFIED", 0),
        ("IDENTITY", 1),
        ("REGEX_EXTRACT", 2),
    ),
    "ReinforcementTuningStringMatchRewardScorer.MatchOperation": (
        ("MATCH_OPERATION_UNSPECIFIED", 0),
        ("REGEX_CONTAINS", 1),
        ("PARTIAL_MATCH", 2),
        ("EXACT_MATCH", 3),
    ),
    "VeoLoraTuningSpec.VideoOrientation": (
        ("VIDEO_ORIENTATION_UNSPECIFIED", 0),
        ("LANDSCAPE", 1),
        ("PORTRAIT", 2),
    ),
}

# ----------------------------------------------------------------------- per version


def _merge(*parts: dict[str, tuple[Row, ...]]) -> dict[str, tuple[Row, ...]]:
    out: dict[str, tuple[Row, ...]] = {}
    for part in parts:
        for name, rows in part.items():
            out[name] = out.get(name, ()) + rows
    return out


# Version -> message name -> rows appended to that message (which the generated schema has).
FIELDS: dict[str, dict[str, tuple[Row, ...]]] = {
    "v1": _merge(_BOTH_FIELDS),
    "v1beta1": _merge(_BOTH_FIELDS, _BETA_FIELDS),
}
# Version -> new messages.
MESSAGES: dict[str, dict[str, tuple[Row, ...]]] = {
    "v1": _merge(_PREFERENCE_MESSAGES, _V1_DISTRIBUTION),
    "v1beta1": _merge(_PREFERENCE_MESSAGES, _BETA_MESSAGES),
}
# Version -> new enums.
ENUMS: dict[str, dict[str, tuple[tuple[str, int], ...]]] = {
    "v1": {},
    "v1beta1": dict(_BETA_ENUMS),
}
# Fields the protos call required that newer clients no longer send ([genai] DistillationSpec:
# "Deprecated. ... training dataset", "Deprecated. ... pipeline root directory"): (message, field).
NOT_REQUIRED: frozenset[tuple[str, str]] = frozenset({
    ("DistillationSpec", "training_dataset_uri"),
    ("DistillationSpec", "pipeline_root_directory"),
})
