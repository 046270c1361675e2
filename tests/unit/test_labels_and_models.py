"""tuningd's own labels (recognised old and new, taken out of views) and the model catalog."""

from __future__ import annotations

import pytest

from tuningd.core import recovery
from tuningd.core.errors import InvalidArgument
from tuningd.core.model import client_labels, is_ours, ours_labels
from tuningd.vertex import wire
from tuningd.vertex.models import (
    ALL_ADAPTER_SIZES,
    DEFAULT_MODEL_SIZES,
    UnknownModels,
    catalog_from_sizes,
)


def test_ours_is_the_new_label_or_the_old_pair() -> None:
    """A job is tuningd's with tuningd-managed=true, or with managed-by=tuningd and a job id
    (tuningd before issue 8); a client's own managed-by label alone is not tuningd's."""
    assert is_ours(ours_labels("j1"))
    assert is_ours({"managed-by": "tuningd", "tuningd-job-id": "j1"})
    assert not is_ours({"managed-by": "tuningd"})
    assert not is_ours({"managed-by": "terraform", "team": "nlp"})


def test_client_labels_drop_only_what_tuningd_added() -> None:
    """Views show the client's labels: tuningd's namespace and its old managed-by=tuningd go,
    unless the client itself sent managed-by=tuningd."""
    remote = {"team": "nlp", "managed-by": "terraform", **ours_labels("j1")}
    assert client_labels(remote, {"team": "nlp", "managed-by": "terraform"}) == {
        "team": "nlp", "managed-by": "terraform"}
    old = {"team": "nlp", "managed-by": "tuningd", "tuningd-job-id": "j1"}
    assert client_labels(old, {"team": "nlp"}) == {"team": "nlp"}
    assert client_labels(old, {"managed-by": "tuningd"}) == {"team": "nlp",
                                                            "managed-by": "tuningd"}


def _job(model: str, size: str = "ADAPTER_SIZE_FOUR") -> dict[str, object]:
    return {"baseModel": model, "supervisedTuningSpec": {
        "trainingDatasetUri": "gs://b/t.jsonl", "hyperParameters": {"adapterSize": size}}}


def test_forwarding_catalog_accepts_unknown_models_and_checks_known_ones() -> None:
    """With unknown = forward, any model id passes with any adapter size, while a listed model
    (also given as a publisher resource name) keeps its sizes; refuse answers 400."""
    forward = catalog_from_sizes(DEFAULT_MODEL_SIZES, unknown=UnknownModels.FORWARD)
    for model in ("gemini-flash-latest", "gemini-9-pro-preview", "publishers/meta/models/x"):
        wire.validate_create(_job(model, "ADAPTER_SIZE_THIRTY_TWO"), forward)
    wire.validate_create(_job("publishers/google/models/gemini-2.5-flash"), forward)
    with pytest.raises(InvalidArgument):
        wire.validate_create(_job("gemini-2.5-pro", "ADAPTER_SIZE_SIXTEEN"), forward)
    with pytest.raises(InvalidArgument):
        wire.validate_create(_job("gemini-flash-latest"), catalog_from_sizes(DEFAULT_MODEL_SIZES))
    assert catalog_from_sizes({"m": ()}).get("m").adapter_sizes == ALL_ADAPTER_SIZES  # type: ignore[union-attr]


def test_a_404_naming_the_model_rejects_the_job_not_the_place() -> None:
    """A forwarded model Vertex does not have fails its own job; other 403/404s pause the place."""
    model_missing = recovery.create_verdict(
        404, "NOT_FOUND", "permanent",
        message="Publisher Model `gemini-9-flash` was not found.", model="gemini-9-flash")
    assert model_missing is recovery.CreateVerdict.REJECTED
    place = recovery.create_verdict(404, "NOT_FOUND", "permanent",
                                    message="Project not found.", model="gemini-9-flash")
    assert place is recovery.CreateVerdict.PLACE_REFUSED
