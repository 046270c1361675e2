"""What happens when a job starts processing: its datasets are read and checked, its
hyperparameters resolved and its tuningDataStats computed, for every tuning kind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuningd.core.errors import NotFound
from tuningd.emulator import dataset as ds
from tuningd.emulator.jobs import EmulatedJob
from tuningd.vertex import wire


@dataclass(frozen=True)
class Processed:
    """The outputs of dataset processing; dataset_error makes the job fail when it ends."""

    hyper_parameters: dict[str, Any]
    stats: dict[str, Any] | None
    step_count: int
    dataset_error: str | None


def process_datasets(spec: Mapping[str, Any], job_id: str, *, catalog: wire.ModelCatalog,
                     gcs_root: Path | None, max_example_tokens: int) -> Processed:
    """Read the training (and validation) set under gcs_root when given, else synthesise one
    seeded by the job id."""
    kind = wire.tuning_kind(spec) or "supervisedTuningSpec"
    tuning = spec.get(kind) or {}
    train_uri = str(tuning.get("trainingDatasetUri") or tuning.get("promptDatasetUri") or "")
    val_uri = tuning.get("validationDatasetUri")
    base = spec.get("baseModel") or (spec.get("preTunedModel") or {}).get("baseModel", "")
    info = catalog.get(wire.base_model_id(str(base)))
    fmt = info.dataset_format if info is not None else ds.CONTENTS_FORMAT
    summary: ds.DatasetSummary | None = None
    error: str | None = None
    try:
        # Only supervised datasets are read: the other kinds' formats are not emulated.
        if gcs_root is not None and train_uri.startswith("gs://") and kind in _READ_KINDS:
            summary = ds.check_lines(ds.read_lines(gcs_root, train_uri), dataset_format=fmt,
                                     uri=train_uri)
            ds.check_training(summary, dataset_format=fmt, uri=train_uri)
            if isinstance(val_uri, str) and val_uri.startswith("gs://"):
                val = ds.check_lines(ds.read_lines(gcs_root, val_uri), dataset_format=fmt,
                                     uri=val_uri)
                ds.check_validation(val, dataset_format=fmt, uri=val_uri,
                                    training_count=len(summary.examples))
    except ds.DatasetError as exc:
        error = str(exc)
        summary = None
    if summary is None:
        summary = ds.synthetic_summary(job_id)
    hyper = _resolve_hyper_parameters(kind, tuning, info, len(summary.examples))
    if error is not None:
        return Processed(hyper, None, 0, error)
    epochs = hyper.get("epochCount")
    stats = ds.tuning_data_stats(summary, epochs=epochs if isinstance(epochs, int) else 1,
                                 max_example_tokens=max_example_tokens)
    sds = stats.get("supervisedTuningDataStats", {})
    steps = int(hyper.get("stepCount") or sds.get("tuningStepCount", 0))
    if sds.get("tuningDatasetExampleCount", 0) == 0:
        return Processed(hyper, None, steps,
                         f"Invalid dataset {train_uri}: no example is within the token limit "
                         f"of {max_example_tokens}.")
    return Processed(hyper, kind_stats(kind, sds), steps, None)


_READ_KINDS = frozenset({"supervisedTuningSpec", "fullFineTuningSpec"})
# DatasetStats (distillation, reinforcement) has these SupervisedTuningDataStats fields.
_DATASET_STATS_KEYS = ("tuningDatasetExampleCount", "totalTuningCharacterCount",
                       "totalBillableCharacterCount", "totalBillableTokenCount",
                       "tuningStepCount", "userInputTokenDistribution",
                       "userOutputTokenDistribution", "userMessagePerExampleDistribution",
                       "userDatasetExamples")


def kind_stats(kind: str, sds: Mapping[str, Any]) -> dict[str, Any] | None:
    """A kind's tuningDataStats member built from supervised stats (the proto's shape for that
    kind); None for kinds whose TuningDataStats has no member (Veo, partner models)."""
    def pick(keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: sds[k] for k in keys if k in sds}

    dropped = {"droppedExampleIndices": sds["truncatedExampleIndices"],
               "droppedExampleReasons": sds["droppedExampleReasons"]} \
        if sds.get("truncatedExampleIndices") else {}
    if kind in _READ_KINDS:
        return {"supervisedTuningDataStats": dict(sds)}
    if kind == "preferenceOptimizationSpec":
        return {"preferenceOptimizationDataStats": {**pick((
            "tuningDatasetExampleCount", "totalBillableTokenCount", "tuningStepCount",
            "userInputTokenDistribution", "userOutputTokenDistribution")), **dropped}}
    if kind == "distillationSpec":
        return {"distillationDataStats": {"trainingDatasetStats": {
            **pick(_DATASET_STATS_KEYS), **dropped}}}
    if kind == "reinforcementTuningSpec":
        return {"reinforcementTuningDataStats": {**pick(_DATASET_STATS_KEYS), **dropped}}
    return None


# Kinds whose hyperParameters.adapterSize is SupervisedHyperParameters.AdapterSize.
_GEMINI_KINDS = frozenset({"supervisedTuningSpec", "fullFineTuningSpec", "distillationSpec",
                           "preferenceOptimizationSpec", "reinforcementTuningSpec"})


def _resolve_hyper_parameters(kind: str, tuning: Mapping[str, Any], info: wire.ModelInfo | None,
                              example_count: int) -> dict[str, Any]:
    given = dict(tuning.get("hyperParameters") or {})
    if kind == "partnerModelTuningSpec":
        return given  # free-form: the partner model's own names
    if "stepCount" not in given:  # reinforcement: step_count excludes epoch_count
        given.setdefault("epochCount", ds.auto_epochs(example_count))
    if "learningRate" not in given:
        given.setdefault("learningRateMultiplier", 1.0)
    if kind not in _GEMINI_KINDS:
        return given
    if "adapterSize" not in given:
        sizes = info.adapter_sizes if info is not None else frozenset()
        if "ADAPTER_SIZE_FOUR" in sizes or not sizes:
            given["adapterSize"] = "ADAPTER_SIZE_FOUR"
        else:
            given["adapterSize"] = min(sizes, key=lambda s: wire.ADAPTER_SIZE_NUMBERS.get(s, 0))
    return given


def with_pre_tuned_base(spec: dict[str, Any], jobs: Iterable[EmulatedJob]) -> dict[str, Any]:
    """The spec with preTunedModel.baseModel filled from the job that tuned that model (the
    base model of its own source); NotFound when no job here produced the model."""
    pre = spec.get("preTunedModel")
    if not pre:
        return spec
    name = str(pre.get("tunedModelName", ""))
    model_id = name.split("@", 1)[0].rsplit("/", 1)[-1]
    source = next((j for j in jobs if j.model_id == model_id), None)
    if source is None:
        raise NotFound(f"The Model does not exist: {name}.")
    base = source.spec.get("baseModel") or (source.spec.get("preTunedModel") or {}).get(
        "baseModel", "")
    return {**spec, "preTunedModel": {**pre, "baseModel": base}}
