"""What happens when a job starts processing: its datasets are read and checked, its
hyperparameters resolved and its tuningDataStats computed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuningd import wire
from tuningd.emulator import dataset as ds


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
    tuning = spec.get("supervisedTuningSpec") or {}
    train_uri = str(tuning.get("trainingDatasetUri", ""))
    val_uri = tuning.get("validationDatasetUri")
    info = catalog.get(wire.base_model_id(str(spec.get("baseModel", ""))))
    fmt = info.dataset_format if info is not None else ds.CONTENTS_FORMAT
    summary: ds.DatasetSummary | None = None
    error: str | None = None
    try:
        if gcs_root is not None and train_uri.startswith("gs://"):
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
    hyper = _resolve_hyper_parameters(tuning, info, len(summary.examples))
    if error is not None:
        return Processed(hyper, None, 0, error)
    stats = ds.tuning_data_stats(summary, epochs=int(hyper["epochCount"]),
                                 max_example_tokens=max_example_tokens)
    sds = stats.get("supervisedTuningDataStats", {})
    if sds.get("tuningDatasetExampleCount", 0) == 0:
        return Processed(hyper, None, int(sds.get("tuningStepCount", 0)),
                         f"Invalid dataset {train_uri}: no example is within the token limit "
                         f"of {max_example_tokens}.")
    return Processed(hyper, stats, int(sds.get("tuningStepCount", 0)), None)


def _resolve_hyper_parameters(tuning: Mapping[str, Any], info: wire.ModelInfo | None,
                              example_count: int) -> dict[str, Any]:
    given = dict(tuning.get("hyperParameters") or {})
    given.setdefault("epochCount", ds.auto_epochs(example_count))
    if "learningRate" not in given:
        given.setdefault("learningRateMultiplier", 1.0)
    if "adapterSize" not in given:
        sizes = info.adapter_sizes if info is not None else frozenset()
        if "ADAPTER_SIZE_FOUR" in sizes or not sizes:
            given["adapterSize"] = "ADAPTER_SIZE_FOUR"
        else:
            given["adapterSize"] = min(sizes, key=lambda s: wire.ADAPTER_SIZE_NUMBERS.get(s, 0))
    return given
