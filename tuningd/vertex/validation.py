"""Vertex's create-time checks on a canonical TuningJob, for every tuning kind (400s only).

The source model against the base-model catalog is wire.validate_create's (it owns the catalog);
this module checks everything else: one tuning spec, each kind's required fields and documented
value rules, the fields every kind shares, and, generically, every REQUIRED field and oneof of
the messages a client set. Ranges Vertex does not document are inferred (spec §6) and marked so.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from tuningd.core.errors import InvalidArgument
from tuningd.vertex.schema import Field, Message, schema

__all__ = ["KINDS", "MAX_DISPLAY_NAME_LENGTH", "MAX_EPOCH_COUNT", "MAX_LABELS",
           "RESERVED_LABEL_PREFIX", "check_labels", "tuning_kind", "validate_job"]

# Ranges are undocumented (spec §6); the emulator's inferred limits.
MAX_EPOCH_COUNT = 100
MAX_DISPLAY_NAME_LENGTH = 128
MAX_LABELS = 64
MAX_LABEL_LENGTH = 64
RESERVED_LABEL_PREFIX = "aiplatform.googleapis.com/"

# The tuning_spec oneof's members (JSON name) -> the kind's short name.
KINDS: Mapping[str, str] = {
    "supervisedTuningSpec": "supervised",
    "preferenceOptimizationSpec": "preference_optimization",
    "distillationSpec": "distillation",
    "reinforcementTuningSpec": "reinforcement",
    "fullFineTuningSpec": "full_fine_tuning",
    "partnerModelTuningSpec": "partner_model",
    "veoTuningSpec": "veo",
    "veoLoraTuningSpec": "veo_lora",
}
# Kinds whose hyperParameters.adapterSize is SupervisedHyperParameters.AdapterSize, checked
# against the base model's sizes.
_GEMINI_ADAPTER_KINDS = frozenset({"supervisedTuningSpec", "preferenceOptimizationSpec",
                                   "distillationSpec", "reinforcementTuningSpec",
                                   "fullFineTuningSpec"})
# Bucket length is not enforced (GCS wants 3-63): the SDK docs' own samples use gs://b/...
_GCS_URI_RE = re.compile(r"gs://[a-z0-9](?:[a-z0-9._-]{0,220}[a-z0-9])?/[^\r\n]+")
_GCS_DIR_RE = re.compile(r"gs://[a-z0-9](?:[a-z0-9._-]{0,220}[a-z0-9])?(?:/[^\r\n]*)?")
_DATASET_RE = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/datasets/[^/\s]+")
_TUNED_MODEL_RE = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/models/[^/\s]+")


@functools.cache
def _snake(json_name: str) -> str:
    # Cached: every create names its tuning spec's kind (the names are the schema's few).
    return re.sub(r"(?<!^)([A-Z])", r"_\1", json_name).lower()


def tuning_kind(job: Mapping[str, Any]) -> str | None:
    """The JSON name of the tuning spec a canonical job sets (the first, if several)."""
    return next((name for name in KINDS if name in job), None)


# --------------------------------------------------------------------------------------------
# Small rules


def _uri(value: Any, what: str, *, datasets: bool) -> None:
    text = str(value)
    if _GCS_URI_RE.fullmatch(text) or (datasets and _DATASET_RE.fullmatch(text)):
        return
    also = " or a Vertex AI dataset resource name" if datasets else ""
    raise InvalidArgument(
        f"Invalid {what}: {text}. It must be a Cloud Storage URI (gs://bucket/object){also}.")


def _gcs_dir(value: Any, what: str) -> None:
    if not _GCS_DIR_RE.fullmatch(str(value)):
        raise InvalidArgument(
            f"Invalid {what}: {value}. It must be a Cloud Storage URI (gs://bucket/path).")


def _positive(value: Any, name: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InvalidArgument(f"Invalid {name}: {value}. It must be a positive number.")


def _at_least_one(value: Any, name: str) -> None:
    if value is not None and value < 1:
        raise InvalidArgument(f"Invalid {name}: {value}. It must be at least 1.")


def _epochs(value: Any) -> None:
    if value is not None and not 1 <= value <= MAX_EPOCH_COUNT:
        raise InvalidArgument(
            f"Invalid epoch_count: {value}. It must be between 1 and {MAX_EPOCH_COUNT}.")


def _datasets(spec: Mapping[str, Any], proto: str, *, datasets: bool,
              train_keys: tuple[str, ...] = ("trainingDatasetUri",)) -> None:
    train = next((spec[k] for k in train_keys if spec.get(k)), None)
    if not train:
        raise InvalidArgument(f"{proto}.{_snake(train_keys[0])} is required.")
    _uri(train, "training dataset URI", datasets=datasets)
    val = spec.get("validationDatasetUri")
    if val:
        _uri(val, "validation dataset URI", datasets=datasets)


def _learning_rates(hp: Mapping[str, Any]) -> None:
    lrm, lr = hp.get("learningRateMultiplier"), hp.get("learningRate")
    _positive(lrm, "learning_rate_multiplier")
    _positive(lr, "learning_rate")
    if lrm is not None and lr is not None:
        raise InvalidArgument(
            "learning_rate_multiplier and learning_rate cannot be set at the same time.")


# --------------------------------------------------------------------------------------------
# Per kind


def _supervised(spec: Mapping[str, Any], proto: str) -> None:
    _datasets(spec, proto, datasets=True)
    hp = spec.get("hyperParameters") or {}
    _epochs(hp.get("epochCount"))
    _learning_rates(hp)
    _at_least_one(hp.get("batchSize"), "batch_size")


def _preference(spec: Mapping[str, Any], proto: str) -> None:
    # genai: "Cloud Storage path to file containing training dataset ... JSONL".
    _datasets(spec, proto, datasets=False)
    hp = spec.get("hyperParameters") or {}
    _epochs(hp.get("epochCount"))
    _positive(hp.get("learningRateMultiplier"), "learning_rate_multiplier")
    beta = hp.get("beta")
    if beta is not None and not (math.isfinite(beta) and beta >= 0):  # inferred
        raise InvalidArgument(f"Invalid beta: {beta}. It must be a non-negative number.")


def _distillation(spec: Mapping[str, Any], proto: str) -> None:
    # genai sends the prompts as promptDatasetUri; trainingDatasetUri is the deprecated name.
    _datasets(spec, proto, datasets=False, train_keys=("promptDatasetUri", "trainingDatasetUri"))
    teachers = [k for k in ("baseTeacherModel", "tunedTeacherModelSource") if spec.get(k)]
    if not teachers:
        raise InvalidArgument(
            f"One of {proto}.base_teacher_model or {proto}.tuned_teacher_model_source must be "
            "set.")
    tuned = spec.get("tunedTeacherModelSource")
    if tuned and not _TUNED_MODEL_RE.fullmatch(str(tuned).split("@", 1)[0]):
        raise InvalidArgument(
            f"Invalid {proto}.tuned_teacher_model_source: {tuned}. Expected "
            "projects/{project}/locations/{location}/models/{model}.")
    hp = spec.get("hyperParameters") or {}
    _epochs(hp.get("epochCount"))
    _learning_rates(hp)
    _at_least_one(hp.get("batchSize"), "batch_size")


def _reinforcement(spec: Mapping[str, Any], proto: str) -> None:
    _datasets(spec, proto, datasets=False)
    hp = spec.get("hyperParameters") or {}
    _epochs(hp.get("epochCount"))
    if hp.get("epochCount") is not None and hp.get("stepCount") is not None:
        # genai: step_count is "mutually exclusive with epoch_count".
        raise InvalidArgument("epoch_count and step_count cannot be set at the same time.")
    _positive(hp.get("learningRateMultiplier"), "learning_rate_multiplier")
    for key in ("stepCount", "samplesPerPrompt", "batchSize", "evaluateInterval",
                "checkpointInterval", "maxOutputTokens"):
        _at_least_one(hp.get(key), _snake(key))
    budget = hp.get("thinkingBudget")
    if budget is not None and budget < -1:
        # genai: -1 is dynamic thinking, 0 none, > 0 a budget in tokens.
        raise InvalidArgument(f"Invalid thinking_budget: {budget}. It must be at least -1.")
    rewards = [k for k in ("singleRewardConfig", "compositeRewardConfig") if spec.get(k)]
    if len(rewards) != 1:  # inferred: a reinforcement job needs exactly one reward definition
        raise InvalidArgument(
            f"Exactly one of {proto}.single_reward_config and {proto}.composite_reward_config "
            "must be set.")
    composite = spec.get("compositeRewardConfig") or {}
    for i, weighted in enumerate(composite.get("weightedRewardConfigs") or []):
        weight = weighted.get("weight")
        if weight is not None and not (math.isfinite(weight) and weight >= 0):  # inferred
            raise InvalidArgument(
                f"Invalid {proto}.composite_reward_config.weighted_reward_configs[{i}].weight: "
                f"{weight}. It must be a non-negative number.")


def _veo(spec: Mapping[str, Any], proto: str) -> None:
    _datasets(spec, proto, datasets=True)
    hp = spec.get("hyperParameters") or {}
    _epochs(hp.get("epochCount"))
    _positive(hp.get("learningRateMultiplier"), "learning_rate_multiplier")
    ratio = hp.get("veoDataMixtureRatio")
    if ratio is not None and not 0 <= ratio <= 1:  # inferred: a ratio
        raise InvalidArgument(
            f"Invalid veo_data_mixture_ratio: {ratio}. It must be between 0 and 1.")


def _partner(spec: Mapping[str, Any], proto: str) -> None:
    _datasets(spec, proto, datasets=False)


_CHECKS: Mapping[str, Callable[[Mapping[str, Any], str], None]] = {
    "supervisedTuningSpec": _supervised,
    "fullFineTuningSpec": _supervised,
    "preferenceOptimizationSpec": _preference,
    "distillationSpec": _distillation,
    "reinforcementTuningSpec": _reinforcement,
    "veoTuningSpec": _veo,
    "veoLoraTuningSpec": _veo,
    "partnerModelTuningSpec": _partner,
}


# --------------------------------------------------------------------------------------------
# Labels


def _label_chars_ok(text: str, *, first_letter: bool) -> bool:
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat in ("Ll", "Lo"):
            continue
        if i == 0 and first_letter:
            return False
        if cat not in ("Nd", "Nl", "No") and ch not in "_-":
            return False
    return True


def check_labels(labels: Mapping[str, Any]) -> None:
    """Spec §8's label rules; InvalidArgument naming the first offending key or value."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(
            f"Too many labels: {len(labels)}. At most {MAX_LABELS} labels are allowed.")
    for key, value in labels.items():
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise InvalidArgument(
                f'Label key "{key}" is invalid: keys prefixed with "{RESERVED_LABEL_PREFIX}" '
                "are reserved for system labels.")
        if not (1 <= len(key) <= MAX_LABEL_LENGTH and _label_chars_ok(key, first_letter=True)):
            raise InvalidArgument(
                f'Label key "{key}" is invalid: keys must be 1-{MAX_LABEL_LENGTH} characters, '
                "start with a lowercase letter and contain only lowercase letters, numeric "
                "characters, underscores and dashes.")
        if not (isinstance(value, str) and len(value) <= MAX_LABEL_LENGTH
                and _label_chars_ok(value, first_letter=False)):
            raise InvalidArgument(
                f'Label value "{value}" of key "{key}" is invalid: values must be at most '
                f"{MAX_LABEL_LENGTH} characters and contain only lowercase letters, numeric "
                "characters, underscores and dashes.")


# --------------------------------------------------------------------------------------------
# Generic: REQUIRED fields and oneofs of every message set


@functools.cache
def _checked_fields(msg: Message) -> tuple[Field, ...]:
    """The fields _generic has anything to check in: required ones and messages (input only)."""
    return tuple(f for f in msg.fields if not f.output
                 and ((f.required and not f.oneof) or f.message is not None))


def _generic(msg: Message, obj: Mapping[str, Any], path: str) -> None:
    for name, members in msg.oneofs.items():
        given = [f for f in members if f.json in obj]
        if len(given) > 1:
            raise InvalidArgument(
                f"Only one of {path}{given[0].proto} and {path}{given[1].proto} can be set "
                f"(oneof {name}).")
    for f in _checked_fields(msg):
        value = obj.get(f.json)
        if f.required and not f.oneof and value is None:
            raise InvalidArgument(f"{path}{f.proto} is required.")
        if f.message is None or value is None:
            continue
        items = (list(value.values()) if f.map and isinstance(value, dict)
                 else value if f.repeated and isinstance(value, list) else [value])
        for i, item in enumerate(items):
            if isinstance(item, dict):
                index = f"[{i}]" if f.repeated else ""
                _generic(f.message, item, f"{path}{f.proto}{index}.")


# --------------------------------------------------------------------------------------------
# The whole job


def validate_job(job: Mapping[str, Any], *, adapter_sizes: frozenset[str] | None = None,
                 api_version: str | None = None) -> None:
    """Every check but the source model's catalog entry; raises InvalidArgument.

    adapter_sizes: the sizes the base model allows (None: not checked).
    """
    specs = [name for name in KINDS if job.get(name) is not None]
    if not specs:
        raise InvalidArgument(
            "supervised_tuning_spec is required (or another tuning spec: "
            + ", ".join(_snake(n) for n in KINDS if n != "supervisedTuningSpec") + ").")
    if len(specs) > 1:
        raise InvalidArgument(
            f"Only one of {_snake(specs[0])} and {_snake(specs[1])} can be set "
            "(oneof tuning_spec).")
    kind = specs[0]
    spec = job[kind]
    _CHECKS[kind](spec, _snake(kind))
    size = (spec.get("hyperParameters") or {}).get("adapterSize")
    if (size and adapter_sizes is not None and kind in _GEMINI_ADAPTER_KINDS
            and size not in adapter_sizes):
        raise InvalidArgument("The adapter size is not supported for this base model.")

    custom = job.get("customBaseModel")
    if custom:
        if not job.get("baseModel"):
            # The field's documentation: "the base_model field must still be set".
            raise InvalidArgument(
                "base_model is required when custom_base_model is set: it names the model the "
                "custom weights derive from.")
        _gcs_dir(custom, "custom_base_model")
    output_uri = job.get("outputUri")
    if output_uri:
        _gcs_dir(output_uri, "output_uri")

    display = job.get("tunedModelDisplayName")
    if display is not None and len(display) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument(
            f"tuned_model_display_name is too long: {len(display)} characters; at most "
            f"{MAX_DISPLAY_NAME_LENGTH} are allowed.")
    check_labels(job.get("labels") or {})
    _generic(schema(api_version).root, job, "")
