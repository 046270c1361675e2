"""Vertex TuningJob wire codec: both JSON dialects in, proto3 JSON out, list filters, page tokens, error envelope.

CONTRACT (implemented by the wire owner; the emulator, the daemon's API and the Vertex client use
only these names). The *canonical form* of a TuningJob is a plain dict:
  - keys are lowerCamelCase JSON names at every level (map keys such as label keys untouched);
  - int64/uint64 fields are Python ints; double fields are floats; bools are bools;
  - enum fields hold their NAME as str (e.g. "ADAPTER_SIZE_FOUR", "JOB_STATE_RUNNING");
  - Timestamp fields hold RFC 3339 UTC strings with microseconds and "Z"
    ("2025-06-02T10:15:03.418225Z");
  - unset/empty fields are absent.
The canonical form round-trips: parse_tuning_job(render_tuning_job(x)) == x.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tuningd.errors import TuningdError

API_VERSIONS: tuple[str, ...] = ("v1", "v1beta1")

# AdapterSize wire numbers are not in order (spec §3).
ADAPTER_SIZE_NUMBERS: Mapping[str, int] = {
    "ADAPTER_SIZE_UNSPECIFIED": 0,
    "ADAPTER_SIZE_ONE": 1,
    "ADAPTER_SIZE_TWO": 6,
    "ADAPTER_SIZE_FOUR": 2,
    "ADAPTER_SIZE_EIGHT": 3,
    "ADAPTER_SIZE_SIXTEEN": 4,
    "ADAPTER_SIZE_THIRTY_TWO": 5,
}

JOB_STATE_NUMBERS: Mapping[str, int] = {
    "JOB_STATE_UNSPECIFIED": 0,
    "JOB_STATE_QUEUED": 1,
    "JOB_STATE_PENDING": 2,
    "JOB_STATE_RUNNING": 3,
    "JOB_STATE_SUCCEEDED": 4,
    "JOB_STATE_FAILED": 5,
    "JOB_STATE_CANCELLING": 6,
    "JOB_STATE_CANCELLED": 7,
    "JOB_STATE_PAUSED": 8,
    "JOB_STATE_EXPIRED": 9,
    "JOB_STATE_UPDATING": 10,
    "JOB_STATE_PARTIALLY_SUCCEEDED": 11,
}


@dataclass(frozen=True)
class ModelInfo:
    """What Vertex allows for one tunable base model."""

    name: str
    adapter_sizes: frozenset[str]
    dataset_format: str = "contents"  # "contents" (Gemini) or "messages" (gemini-1.0-pro-002)


@dataclass(frozen=True)
class ModelCatalog:
    """The base-model allow-list used for validation (configurable in the emulator)."""

    models: Mapping[str, ModelInfo]

    def get(self, name: str) -> ModelInfo | None:
        return self.models.get(name)


DEFAULT_CATALOG: ModelCatalog  # defined by the implementation (spec §3, §6)


def parse_json_body(raw: bytes) -> Any:
    """Decode a request body; malformed JSON -> InvalidArgument with Google's wording."""
    raise NotImplementedError


def parse_tuning_job(body: Any, *, ignore_unknown: bool = False) -> dict[str, Any]:
    """Parse a TuningJob JSON object in either dialect (camelCase or snake_case, int64 as string or
    number, enums by name or number) into the canonical form. Unknown fields raise InvalidArgument
    ('Invalid JSON payload received. Unknown name "x" at \'tuning_job.supervised_tuning_spec\':
    Cannot find field.') unless ignore_unknown; wrong types and bad enum values raise
    InvalidArgument naming the field path."""
    raise NotImplementedError


def render_tuning_job(job: Mapping[str, Any], *, enum_as_int: bool = False,
                      api_version: str = "v1") -> dict[str, Any]:
    """Canonical form -> proto3 JSON dict (int64 as strings, enums as names or ints, empty
    fields omitted). For api_version "v1", v1beta1-only fields (tuningJobState,
    tuningJobMetadata, ...) are dropped."""
    raise NotImplementedError


def validate_create(job: Mapping[str, Any], catalog: ModelCatalog | None = None) -> None:
    """Vertex's create-time checks on a canonical TuningJob; raises InvalidArgument with a
    Vertex-like message: exactly one source model, base model in the catalog, adapter size
    allowed for it, supervisedTuningSpec.trainingDatasetUri present and gs:// (or a dataset
    resource name), validationDatasetUri gs:// when present, tunedModelDisplayName <= 128 code
    points, label rules (spec §8), epochCount >= 1, learningRateMultiplier > 0 and not together
    with learningRate."""
    raise NotImplementedError


def wants_int_enums(query: Mapping[str, str]) -> bool:
    """True when the request carries `$alt=json;enum-encoding=int` (any case, any order)."""
    raise NotImplementedError


def compile_filter(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile an AIP-160 list filter (labels.k=v, labels.k:*, state, display_name,
    create_time comparisons, AND/OR/NOT, parentheses) into a predicate on canonical jobs.
    Empty text matches everything. Unparseable text -> InvalidArgument."""
    raise NotImplementedError


def encode_page_token(offset_key: str, filter_text: str) -> str:
    """An opaque page token that resumes after offset_key for this filter."""
    raise NotImplementedError


def decode_page_token(token: str, filter_text: str) -> str:
    """The offset_key of a token from encode_page_token; a forged, corrupt or foreign-filter token
    -> InvalidArgument."""
    raise NotImplementedError


def parse_page_size(value: str | None, *, default: int = 50, maximum: int = 100) -> int:
    """pageSize query value -> int (0/absent -> default, > maximum -> maximum, negative or not an
    int -> InvalidArgument)."""
    raise NotImplementedError


def format_timestamp(unix_s: float) -> str:
    """Unix seconds -> RFC 3339 UTC with microseconds and Z."""
    raise NotImplementedError


def parse_timestamp(text: str) -> float:
    """RFC 3339 (0-9 fractional digits, Z or offset) -> Unix seconds; bad text -> InvalidArgument."""
    raise NotImplementedError


def error_envelope(err: TuningdError) -> dict[str, Any]:
    """Google's error envelope: {"error": {"code": <http>, "message": ..., "status": <NAME>}}
    (plus "details" when the error has any)."""
    raise NotImplementedError
