"""Vertex TuningJob wire codec: both JSON dialects in, proto3 JSON out, filters, tokens, errors.

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

import base64
import copy
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tuningd.errors import InvalidArgument, TuningdError
from tuningd.model import LOCAL_TO_REMOTE, LocalState

# The base-model catalog lives in tuningd.models (configurable); re-exported for wire's users.
from tuningd.models import DEFAULT_CATALOG, ModelCatalog, ModelInfo

__all__ = [
    "ADAPTER_SIZE_NUMBERS",
    "API_VERSIONS",
    "DEFAULT_CATALOG",
    "INVALID_LOCATION_DESCRIPTION",
    "INVALID_PROJECT_MESSAGE",
    "JOB_STATE_NUMBERS",
    "LOCATION_PATTERN",
    "MAX_DISPLAY_NAME_LENGTH",
    "MAX_EPOCH_COUNT",
    "MAX_LABELS",
    "OUTPUT_ONLY_FIELDS",
    "PROJECT_PATTERN",
    "TUNING_JOB_STATE_NUMBERS",
    "TUNING_MODE_NUMBERS",
    "V1BETA1_ONLY_FIELDS",
    "FilterPushdown",
    "ModelCatalog",
    "ModelInfo",
    "base_model_id",
    "check_parent",
    "compile_filter",
    "decode_page_token",
    "encode_page_token",
    "error_envelope",
    "filter_pushdown",
    "format_timestamp",
    "parse_empty_request",
    "parse_json_body",
    "parse_page_size",
    "parse_timestamp",
    "parse_tuning_job",
    "render_tuning_job",
    "strip_output_only",
    "validate_create",
    "wants_int_enums",
]

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

TUNING_MODE_NUMBERS: Mapping[str, int] = {
    "TUNING_MODE_UNSPECIFIED": 0,
    "TUNING_MODE_FULL": 1,
    "TUNING_MODE_PEFT_ADAPTER": 2,
}

TUNING_JOB_STATE_NUMBERS: Mapping[str, int] = {
    "TUNING_JOB_STATE_UNSPECIFIED": 0,
    "TUNING_JOB_STATE_WAITING_FOR_QUOTA": 1,
    "TUNING_JOB_STATE_PROCESSING_DATASET": 2,
    "TUNING_JOB_STATE_WAITING_FOR_CAPACITY": 3,
    "TUNING_JOB_STATE_TUNING": 4,
    "TUNING_JOB_STATE_POST_PROCESSING": 5,
}

# Ranges are undocumented (spec §6); the emulator's inferred limits.
MAX_EPOCH_COUNT = 100
MAX_DISPLAY_NAME_LENGTH = 128
MAX_LABELS = 64
MAX_LABEL_LENGTH = 64
RESERVED_LABEL_PREFIX = "aiplatform.googleapis.com/"

_ROOT_PATH = "tuning_job"
_INT64_RANGE = (-(2**63), 2**63 - 1)
_INT32_RANGE = (-(2**31), 2**31 - 1)


# --------------------------------------------------------------------------------------------
# Schema


class _Enum:
    def __init__(self, type_name: str, numbers: Mapping[str, int]) -> None:
        self.type_name = type_name
        self.numbers = dict(numbers)
        self.names = {v: k for k, v in numbers.items()}


class _Field:
    def __init__(self, proto: str, kind: str, *, repeated: bool = False,
                 message: _Message | None = None, enum: _Enum | None = None,
                 beta: bool = False, output: bool = False) -> None:
        self.proto = proto
        parts = proto.split("_")
        self.json = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
        self.kind = kind
        self.repeated = repeated
        self.message = message
        self.enum = enum
        self.beta = beta
        self.output = output


class _Message:
    def __init__(self, type_name: str, fields: list[_Field]) -> None:
        self.type_name = type_name
        self.fields = fields
        self.lookup: dict[str, _Field] = {}
        for f in fields:
            self.lookup[f.json] = f
            self.lookup[f.proto] = f


def _type_url(type_name: str, api_version: str | None) -> str:
    if type_name.startswith("google."):
        return f"type.googleapis.com/{type_name}"
    ver = "v1beta1" if api_version == "v1beta1" else "v1"
    return f"type.googleapis.com/google.cloud.aiplatform.{ver}.{type_name}"


def _msg(proto: str, message: _Message, **kw: Any) -> _Field:
    return _Field(proto, "message", message=message, **kw)


def _en(proto: str, enum: _Enum, **kw: Any) -> _Field:
    return _Field(proto, "enum", enum=enum, **kw)


_ADAPTER_SIZE = _Enum("SupervisedHyperParameters.AdapterSize", ADAPTER_SIZE_NUMBERS)
_JOB_STATE = _Enum("JobState", JOB_STATE_NUMBERS)
_TUNING_MODE = _Enum("SupervisedTuningSpec.TuningMode", TUNING_MODE_NUMBERS)
_TUNING_JOB_STATE = _Enum("TuningJob.TuningJobState", TUNING_JOB_STATE_NUMBERS)

_HYPER = _Message("SupervisedHyperParameters", [
    _Field("epoch_count", "int64"),
    _Field("learning_rate_multiplier", "double"),
    _en("adapter_size", _ADAPTER_SIZE),
    _Field("learning_rate", "double", beta=True),
    _Field("batch_size", "int64", beta=True),
])
_SPEC = _Message("SupervisedTuningSpec", [
    _Field("training_dataset_uri", "string"),
    _Field("validation_dataset_uri", "string"),
    _msg("hyper_parameters", _HYPER),
    _Field("export_last_checkpoint_only", "bool"),
    _Field("evaluation_config", "struct"),
    _en("tuning_mode", _TUNING_MODE, beta=True),
])
_PRE_TUNED = _Message("PreTunedModel", [
    _Field("tuned_model_name", "string"),
    _Field("checkpoint_id", "string"),
    _Field("base_model", "string", output=True),
])
_ENCRYPTION = _Message("EncryptionSpec", [_Field("kms_key_name", "string")])
_STATUS = _Message("google.rpc.Status", [
    _Field("code", "int32"),
    _Field("message", "string"),
    _Field("details", "struct", repeated=True),
])
_CHECKPOINT = _Message("TunedModelCheckpoint", [
    _Field("checkpoint_id", "string"),
    _Field("epoch", "int64"),
    _Field("step", "int64"),
    _Field("endpoint", "string"),
])
_TUNED_MODEL = _Message("TunedModel", [
    _Field("model", "string"),
    _Field("endpoint", "string"),
    _msg("checkpoints", _CHECKPOINT, repeated=True),
])
_BUCKET = _Message("SupervisedTuningDatasetDistribution.DatasetBucket", [
    _Field("count", "double"),
    _Field("left", "double"),
    _Field("right", "double"),
])
_DISTRIBUTION = _Message("SupervisedTuningDatasetDistribution", [
    _Field("sum", "int64"),
    _Field("billable_sum", "int64"),
    _Field("min", "double"),
    _Field("max", "double"),
    _Field("mean", "double"),
    _Field("median", "double"),
    _Field("p5", "double"),
    _Field("p95", "double"),
    _msg("buckets", _BUCKET, repeated=True),
])
_SFT_STATS = _Message("SupervisedTuningDataStats", [
    _Field("tuning_dataset_example_count", "int64"),
    _Field("total_tuning_character_count", "int64"),
    _Field("total_billable_character_count", "int64"),
    _Field("total_billable_token_count", "int64"),
    _Field("tuning_step_count", "int64"),
    _Field("total_truncated_example_count", "int64"),
    _Field("truncated_example_indices", "int64", repeated=True),
    _Field("dropped_example_reasons", "string", repeated=True),
    _Field("user_dataset_examples", "struct", repeated=True),
    _msg("user_input_token_distribution", _DISTRIBUTION),
    _msg("user_output_token_distribution", _DISTRIBUTION),
    _msg("user_message_per_example_distribution", _DISTRIBUTION),
])
_DATA_STATS = _Message("TuningDataStats", [_msg("supervised_tuning_data_stats", _SFT_STATS)])
_JOB_METADATA = _Message("TuningJobMetadata", [
    _Field("completed_epoch_count", "int64"),
    _Field("completed_step_count", "int64"),
])
_TUNING_JOB = _Message("TuningJob", [
    _Field("name", "string", output=True),
    _Field("base_model", "string"),
    _msg("pre_tuned_model", _PRE_TUNED),
    _msg("supervised_tuning_spec", _SPEC),
    _Field("tuned_model_display_name", "string"),
    _Field("description", "string"),
    _Field("labels", "map"),
    _msg("encryption_spec", _ENCRYPTION),
    _Field("service_account", "string"),
    _en("state", _JOB_STATE, output=True),
    _Field("create_time", "timestamp", output=True),
    _Field("update_time", "timestamp", output=True),
    _Field("start_time", "timestamp", output=True),
    _Field("end_time", "timestamp", output=True),
    _msg("error", _STATUS, output=True),
    _Field("experiment", "string", output=True),
    _msg("tuned_model", _TUNED_MODEL, output=True),
    _msg("tuning_data_stats", _DATA_STATS, output=True),
    _Field("evaluate_dataset_runs", "struct", repeated=True, output=True),
    _Field("gcs_metrics_uri", "string", output=True),
    _Field("pipeline_job", "string", beta=True, output=True),
    _Field("custom_base_model", "string", beta=True),
    _Field("output_uri", "string", beta=True),
    _en("tuning_job_state", _TUNING_JOB_STATE, beta=True, output=True),
    _msg("tuning_job_metadata", _JOB_METADATA, beta=True, output=True),
    _Field("satisfies_pzs", "bool", beta=True, output=True),
    _Field("satisfies_pzi", "bool", beta=True, output=True),
])


def _collect(msg: _Message, prefix: str, pred: Callable[[_Field], bool]) -> tuple[str, ...]:
    out: list[str] = []
    for f in msg.fields:
        path = f"{prefix}{f.json}"
        if pred(f):
            out.append(path)
        elif f.message is not None:
            out.extend(_collect(f.message, path + ".", pred))
    return tuple(out)


# Dotted camelCase paths (informational; the codec walks the schema itself).
V1BETA1_ONLY_FIELDS: tuple[str, ...] = _collect(_TUNING_JOB, "", lambda f: f.beta)
OUTPUT_ONLY_FIELDS: tuple[str, ...] = _collect(_TUNING_JOB, "", lambda f: f.output)


# --------------------------------------------------------------------------------------------
# Timestamps

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_MIN_MICROS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(
    microseconds=1)


def _ts_to_micros(text: str) -> int | None:
    """RFC 3339 text -> Unix microseconds (digits past micro truncated), None when invalid."""
    m = _TS_RE.fullmatch(text)
    if m is None:
        return None
    try:
        dt = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]),
                      tzinfo=UTC)
    except ValueError:
        return None
    micros = (dt - _EPOCH) // timedelta(microseconds=1)
    micros += int(((m[7] or "") + "000000")[:6])
    if m[9]:
        offset = (int(m[10]) * 60 + int(m[11])) * 60_000_000
        if int(m[10]) > 23 or int(m[11]) > 59:
            return None
        micros += -offset if m[9] == "+" else offset
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        return None
    return micros


def _micros_to_text(micros: int) -> str:
    dt = _EPOCH + timedelta(microseconds=micros)
    # f-string rather than strftime: %Y does not zero-pad years < 1000 on glibc.
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
            f"{dt.second:02d}.{dt.microsecond:06d}Z")


def format_timestamp(unix_s: float) -> str:
    """Unix seconds -> RFC 3339 UTC with microseconds and Z."""
    if not math.isfinite(unix_s):
        raise InvalidArgument(f"Invalid timestamp: {unix_s!r}")
    micros = round(unix_s * 1_000_000)
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise InvalidArgument(f"Timestamp out of range: {unix_s!r}")
    return _micros_to_text(micros)


def parse_timestamp(text: str) -> float:
    """RFC 3339 (0-9 fractional digits, Z or offset) -> Unix seconds; bad text -> InvalidArgument.
    """
    micros = _ts_to_micros(text) if isinstance(text, str) else None
    if micros is None:
        raise InvalidArgument(f'Invalid timestamp: "{text}". Expected RFC 3339, '
                              'e.g. "2025-06-02T10:15:03.418225Z".')
    return micros / 1_000_000


# --------------------------------------------------------------------------------------------
# Parsing (either dialect -> canonical)


# Google's proto JSON parsers stop at 100 nested messages/values ("Message too deep").
MAX_JSON_DEPTH = 100
# No int64/uint64/double holds an integer literal with more digits than this (double max ~1.8e308).
_MAX_INT_DIGITS = 309
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _json_error(detail: str) -> InvalidArgument:
    return InvalidArgument(f"Invalid JSON payload received. {detail}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _json_error(f'Duplicate key "{key[:200]}".')
        out[key] = value
    return out


def _parse_json_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _json_error(f"Number out of range: {text[:40]}...")
    return int(text)


def _parse_json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _json_error(f"Number out of range: {text[:40]}")
    return value


def _check_json_tree(value: Any) -> None:
    """Depth limit and valid Unicode in every string, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE_RE.search(node):
                raise _json_error("Invalid \\u escape: unpaired UTF-16 surrogate.")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _json_error(f"Message too deep. Max recursion depth is {MAX_JSON_DEPTH}.")
        if isinstance(node, dict):
            stack.extend((k, depth) for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        else:
            stack.extend((v, depth + 1) for v in node)


def parse_json_body(raw: bytes) -> Any:
    """Decode a request body; malformed JSON -> InvalidArgument with Google's wording.

    An empty (or all-whitespace) body decodes to {} (an empty message), as Google's front end does.
    Also refused (never a crash): duplicate keys, nesting deeper than MAX_JSON_DEPTH, numbers no
    proto field can hold (huge integer literals, literals that overflow a double), NaN/Infinity
    literals and unpaired UTF-16 surrogate escapes.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _json_error(f"Invalid UTF-8 at byte {exc.start}.") from None
    if not text.strip():
        return {}

    def _reject_constant(name: str) -> Any:
        # Python's json accepts NaN/Infinity literals; JSON (and Google) does not.
        raise json.JSONDecodeError("Unexpected token", text, text.index(name))

    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_json_int,
                           parse_float=_parse_json_float, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        line = text.splitlines()[exc.lineno - 1] if text.splitlines() else ""
        caret = " " * max(exc.colno - 1, 0) + "^"
        raise InvalidArgument(
            "Invalid JSON payload received. Unexpected token.\n"
            f"{line[:200]}\n{caret[:201]}") from None
    except RecursionError:
        raise _json_error(
            f"Message too deep. Max recursion depth is {MAX_JSON_DEPTH}.") from None
    except ValueError as exc:  # any other conversion limit of the json module
        raise _json_error(f"Unexpected value: {str(exc)[:200]}") from None
    _check_json_tree(value)
    return value


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


class _Ctx:
    def __init__(self, ignore_unknown: bool, api_version: str | None) -> None:
        self.ignore_unknown = ignore_unknown
        self.api_version = api_version


_SCALAR_TYPE = {"string": "TYPE_STRING", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                "double": "TYPE_DOUBLE", "bool": "TYPE_BOOL"}


def _type_label(f: _Field, ctx: _Ctx) -> str:
    if f.kind == "enum":
        assert f.enum is not None
        return _type_url(f.enum.type_name, ctx.api_version)
    if f.kind == "message":
        assert f.message is not None
        return _type_url(f.message.type_name, ctx.api_version)
    if f.kind == "timestamp":
        return "type.googleapis.com/google.protobuf.Timestamp"
    if f.kind == "struct":
        return "type.googleapis.com/google.protobuf.Struct"
    if f.kind == "map":
        return "TYPE_STRING"
    return _SCALAR_TYPE[f.kind]


def _bad_value(path: str, label: str, value: Any) -> InvalidArgument:
    return InvalidArgument(f"Invalid value at '{path}' ({label}), {_dump(value)}")


_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _parse_int(value: Any, bounds: tuple[int, int]) -> int | None:
    n: int
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not value.is_integer():
            return None
        n = int(value)
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        n = int(value)
    else:
        return None
    return n if bounds[0] <= n <= bounds[1] else None


def _parse_double(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:
            return None
        # JSON numbers are finite; Python's json turns 1e400 into inf, which is out of range.
        return result if math.isfinite(result) else None
    if isinstance(value, str):
        if value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        if _FLOAT_RE.fullmatch(value):
            result = float(value)
            # An overflowing literal is out of range, not Infinity.
            return result if math.isfinite(result) else None
    return None


def _parse_scalar(f: _Field, value: Any, path: str, ctx: _Ctx) -> Any:
    """One non-repeated, non-null value of field f -> canonical value (None = default/unset)."""
    kind = f.kind
    result: Any
    if kind == "string":
        if not isinstance(value, str):
            raise _bad_value(path, "TYPE_STRING", value)
        result = value
    elif kind in ("int64", "int32"):
        result = _parse_int(value, _INT64_RANGE if kind == "int64" else _INT32_RANGE)
        if result is None:
            raise _bad_value(path, _SCALAR_TYPE[kind], value)
    elif kind == "double":
        result = _parse_double(value)
        if result is None:
            raise _bad_value(path, "TYPE_DOUBLE", value)
    elif kind == "bool":
        if isinstance(value, bool):
            result = value
        elif value in ("true", "false"):
            result = value == "true"
        else:
            raise _bad_value(path, "TYPE_BOOL", value)
    elif kind == "enum":
        assert f.enum is not None
        if isinstance(value, str) and value in f.enum.numbers:
            result = value
        elif (isinstance(value, int) and not isinstance(value, bool)
              and value in f.enum.names):
            result = f.enum.names[value]
        elif ctx.ignore_unknown and isinstance(value, str | int) and not isinstance(value, bool):
            # Like json_format's ignore_unknown_fields: a value added to the enum after this
            # schema was written must not make a newer server's answer unreadable.
            return None
        else:
            raise _bad_value(path, _type_label(f, ctx), value)
        if f.enum.numbers[result] == 0:
            return None
    elif kind == "timestamp":
        micros = _ts_to_micros(value) if isinstance(value, str) else None
        if micros is None:
            raise _bad_value(path, _type_label(f, ctx), value)
        result = _micros_to_text(micros)
    elif kind == "message":
        assert f.message is not None
        if not isinstance(value, dict):
            raise _bad_value(path, _type_label(f, ctx), value)
        result = _parse_message(f.message, value, path, ctx)
    elif kind == "struct":
        if not isinstance(value, dict):
            raise _bad_value(path, _type_label(f, ctx), value)
        result = copy.deepcopy(value)
    elif kind == "map":
        if not isinstance(value, dict):
            raise _bad_value(path, "map<string, string>", value)
        labels: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise _bad_value(f"{path}[{k}]", "TYPE_STRING", v)
            labels[k] = v
        result = labels
    else:  # pragma: no cover - schema bug
        raise AssertionError(kind)
    return None if _is_default(result) else result


def _is_default(value: Any) -> bool:
    if value is None or value is False:
        return True
    if isinstance(value, str | list | dict):
        return len(value) == 0
    if isinstance(value, int | float):
        return value == 0
    return False


def _parse_field(f: _Field, value: Any, path: str, ctx: _Ctx, key: str, parent: str) -> Any:
    if not f.repeated:
        if isinstance(value, list):
            raise InvalidArgument(
                f'Invalid JSON payload received. Unknown name "{key}" at \'{parent}\': '
                "Proto field is not repeating, cannot start list.")
        return _parse_scalar(f, value, path, ctx)
    if not isinstance(value, list):
        raise _bad_value(path, _type_label(f, ctx), value)
    out: list[Any] = []
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        if item is None or isinstance(item, list):
            raise _bad_value(item_path, _type_label(f, ctx), item)
        parsed = _parse_scalar(f, item, item_path, ctx)
        if parsed is None:
            # Defaults inside a list still occupy a slot.
            parsed = _default_for(f)
        out.append(parsed)
    return out or None


def _default_for(f: _Field) -> Any:
    if f.kind in ("message", "struct", "map"):
        return {}
    if f.kind == "enum":
        assert f.enum is not None
        return f.enum.names[0]
    return {"string": "", "int64": 0, "int32": 0, "double": 0.0, "bool": False}[f.kind]


def _parse_message(msg: _Message, obj: Mapping[str, Any], path: str,
                   ctx: _Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in obj.items():
        f = msg.lookup.get(key)
        if f is None or (f.beta and ctx.api_version == "v1"):
            if ctx.ignore_unknown:
                continue
            raise InvalidArgument(
                f'Invalid JSON payload received. Unknown name "{key}" at \'{path}\': '
                "Cannot find field.")
        if f.json in seen:
            raise InvalidArgument(
                f'Invalid JSON payload received. Duplicate field "{key}" at \'{path}\' '
                f'(also given as "{seen[f.json]}").')
        seen[f.json] = key
        if value is None:
            continue
        parsed = _parse_field(f, value, f"{path}.{f.proto}", ctx, key, path)
        if parsed is not None:
            out[f.json] = parsed
    return out


def parse_tuning_job(body: Any, *, ignore_unknown: bool = False,
                     api_version: str | None = None) -> dict[str, Any]:
    """Parse a TuningJob JSON object in either dialect (camelCase or snake_case, int64 as string or
    number, enums by name or number) into the canonical form. Unknown fields raise InvalidArgument
    ('Invalid JSON payload received. Unknown name "x" at \'tuning_job.supervised_tuning_spec\':
    Cannot find field.') unless ignore_unknown; wrong types and bad enum values raise
    InvalidArgument naming the field path.

    api_version: None accepts the union of v1 and v1beta1 fields; "v1" treats v1beta1-only fields
    as unknown; it also picks the package shown in type URLs of error messages.
    """
    if api_version is not None and api_version not in API_VERSIONS:
        raise InvalidArgument(f"Unsupported API version: {api_version}")
    if not isinstance(body, dict):
        raise InvalidArgument(
            f"Invalid JSON payload received. Expected an object at '{_ROOT_PATH}', "
            f"got {_json_kind(body)}.")
    return _parse_message(_TUNING_JOB, body, _ROOT_PATH, _Ctx(ignore_unknown, api_version))


def parse_empty_request(body: Any, *, ignore_unknown: bool = False,
                        root: str = "cancel_tuning_job_request") -> None:
    """Check the JSON body of a request message without body fields (CancelTuningJobRequest):
    an object, with unknown names refused unless ignore_unknown; raises InvalidArgument."""
    if not isinstance(body, dict):
        raise InvalidArgument(
            f"Invalid JSON payload received. Expected an object at '{root}', "
            f"got {_json_kind(body)}.")
    if body and not ignore_unknown:
        key = next(iter(body))
        raise InvalidArgument(
            f'Invalid JSON payload received. Unknown name "{str(key)[:200]}" at \'{root}\': '
            "Cannot find field.")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Rendering (canonical -> proto3 JSON)


def _render_scalar(f: _Field, value: Any, enum_as_int: bool, api_version: str) -> Any:
    """Lenient: accepts canonical values and also the obvious near-canonical ones."""
    kind = f.kind
    if kind == "int64":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)
    if kind == "int32":
        return int(value)
    if kind == "double":
        d = float(value)
        if math.isnan(d):
            return "NaN"
        if math.isinf(d):
            return "Infinity" if d > 0 else "-Infinity"
        return d
    if kind == "enum":
        assert f.enum is not None
        if isinstance(value, int) and not isinstance(value, bool):
            name = f.enum.names.get(value)
            return value if enum_as_int or name is None else name
        if enum_as_int and value in f.enum.numbers:
            return f.enum.numbers[value]
        return value
    if kind == "timestamp":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return format_timestamp(float(value))
        micros = _ts_to_micros(value) if isinstance(value, str) else None
        return value if micros is None else _micros_to_text(micros)
    if kind == "message":
        assert f.message is not None
        return _render_message(f.message, value, enum_as_int, api_version)
    if kind in ("struct", "map"):
        return copy.deepcopy(value)
    return value


def _is_default_enum(f: _Field, value: Any) -> bool:
    assert f.enum is not None
    return value == f.enum.names[0] or (isinstance(value, int) and value == 0)


def _render_message(msg: _Message, job: Mapping[str, Any], enum_as_int: bool,
                    api_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in job.items():
        f = msg.lookup.get(key)
        if f is None:
            # Not in the schema (e.g. a pass-through extension): copied unchanged.
            if value is not None:
                out[key] = copy.deepcopy(value)
            continue
        if f.beta and api_version == "v1":
            continue
        if _is_default(value) or (f.kind == "enum" and not f.repeated
                                  and _is_default_enum(f, value)):
            continue
        if f.repeated:
            rendered: Any = [_render_scalar(f, v, enum_as_int, api_version) for v in value]
        else:
            rendered = _render_scalar(f, value, enum_as_int, api_version)
            if f.kind == "message" and not rendered:
                continue
        out[f.json] = rendered
    return out


def render_tuning_job(job: Mapping[str, Any], *, enum_as_int: bool = False,
                      api_version: str = "v1") -> dict[str, Any]:
    """Canonical form -> proto3 JSON dict (int64 as strings, enums as names or ints, empty
    fields omitted). For api_version "v1", v1beta1-only fields (tuningJobState,
    tuningJobMetadata, ...) are dropped.

    Keys outside the TuningJob schema are copied unchanged (callers may add extension objects).
    """
    if api_version not in API_VERSIONS:
        raise InvalidArgument(f"Unsupported API version: {api_version}")
    return _render_message(_TUNING_JOB, job, enum_as_int, api_version)


def _strip(msg: _Message, job: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in job.items():
        f = msg.lookup.get(key)
        if f is not None and f.output:
            continue
        if f is not None and f.kind == "message" and not f.repeated and isinstance(value, dict):
            assert f.message is not None
            value = _strip(f.message, value)
            if not value:
                continue
        out[key] = copy.deepcopy(value)
    return out


def strip_output_only(job: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a canonical TuningJob without output-only fields (name, state, times, error,
    tunedModel, ...), which Vertex ignores in a create body."""
    return _strip(_TUNING_JOB, job)


# --------------------------------------------------------------------------------------------
# Create-time validation


# Bucket length is not enforced (GCS wants 3-63): the SDK docs' own samples use gs://b/...
_GCS_URI_RE = re.compile(r"gs://[a-z0-9](?:[a-z0-9._-]{0,220}[a-z0-9])?/[^\r\n]+")
_DATASET_RE = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/datasets/[^/\s]+")
_TUNED_MODEL_RE = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/models/[^/\s]+")
_PUBLISHER_PREFIX_RE = re.compile(
    r"(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/")


def base_model_id(name: str) -> str:
    """The bare model id of a base model given as an id or a publisher model resource name."""
    return _PUBLISHER_PREFIX_RE.sub("", name, count=1)


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


def _check_labels(labels: Mapping[str, Any]) -> None:
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


def validate_create(job: Mapping[str, Any], catalog: ModelCatalog | None = None) -> None:
    """Vertex's create-time checks on a canonical TuningJob; raises InvalidArgument with a
    Vertex-like message: exactly one source model, base model in the catalog, adapter size
    allowed for it, supervisedTuningSpec.trainingDatasetUri present and gs:// (or a dataset
    resource name), validationDatasetUri gs:// when present, tunedModelDisplayName <= 128 code
    points, label rules (spec §8), epochCount >= 1, learningRateMultiplier > 0 and not together
    with learningRate."""
    catalog = catalog if catalog is not None else DEFAULT_CATALOG
    base = job.get("baseModel")
    pre = job.get("preTunedModel")
    if base and pre:
        raise InvalidArgument(
            "Only one of base_model and pre_tuned_model can be set (oneof source_model).")
    if not base and not pre:
        raise InvalidArgument("One of base_model or pre_tuned_model must be set.")
    info: ModelInfo | None = None
    if base:
        info = catalog.get(base_model_id(str(base)))
        if info is None:
            raise InvalidArgument(f"Base model {base} is not supported for tuning.")
    else:
        tuned = (pre or {}).get("tunedModelName")
        if not tuned:
            raise InvalidArgument("pre_tuned_model.tuned_model_name is required.")
        if not _TUNED_MODEL_RE.fullmatch(str(tuned).split("@", 1)[0]):
            raise InvalidArgument(
                f"Invalid pre_tuned_model.tuned_model_name: {tuned}. Expected "
                "projects/{project}/locations/{location}/models/{model}[@version].")

    spec = job.get("supervisedTuningSpec")
    if not spec:
        raise InvalidArgument("supervised_tuning_spec is required.")
    train = spec.get("trainingDatasetUri")
    if not train:
        raise InvalidArgument("supervised_tuning_spec.training_dataset_uri is required.")
    if not (_GCS_URI_RE.fullmatch(train) or _DATASET_RE.fullmatch(train)):
        raise InvalidArgument(
            f"Invalid training dataset URI: {train}. It must be a Cloud Storage URI "
            "(gs://bucket/object) or a Vertex AI dataset resource name.")
    val = spec.get("validationDatasetUri")
    if val and not (_GCS_URI_RE.fullmatch(val) or _DATASET_RE.fullmatch(val)):
        raise InvalidArgument(
            f"Invalid validation dataset URI: {val}. It must be a Cloud Storage URI "
            "(gs://bucket/object) or a Vertex AI dataset resource name.")

    hp = spec.get("hyperParameters") or {}
    epochs = hp.get("epochCount")
    if epochs is not None and not 1 <= epochs <= MAX_EPOCH_COUNT:
        raise InvalidArgument(
            f"Invalid epoch_count: {epochs}. It must be between 1 and {MAX_EPOCH_COUNT}.")
    lrm = hp.get("learningRateMultiplier")
    if lrm is not None and not (math.isfinite(lrm) and lrm > 0):
        raise InvalidArgument(
            f"Invalid learning_rate_multiplier: {lrm}. It must be a positive number.")
    lr = hp.get("learningRate")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise InvalidArgument(f"Invalid learning_rate: {lr}. It must be a positive number.")
    if lrm is not None and lr is not None:
        raise InvalidArgument(
            "learning_rate_multiplier and learning_rate cannot be set at the same time.")
    batch = hp.get("batchSize")
    if batch is not None and batch < 1:
        raise InvalidArgument(f"Invalid batch_size: {batch}. It must be at least 1.")
    size = hp.get("adapterSize")
    if size and info is not None and size not in info.adapter_sizes:
        raise InvalidArgument("The adapter size is not supported for this base model.")

    display = job.get("tunedModelDisplayName")
    if display is not None and len(display) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument(
            f"tuned_model_display_name is too long: {len(display)} characters; at most "
            f"{MAX_DISPLAY_NAME_LENGTH} are allowed.")
    _check_labels(job.get("labels") or {})


# --------------------------------------------------------------------------------------------
# Resource names: the parent projects/{project}/locations/{location}

# A project is one of: a project id (6-30 of [a-z0-9-], a letter first, no hyphen last: Google's
# documented rule); a project number; a legacy domain-scoped id "example.com:my-project". The
# number and domain-scoped forms follow the path pattern Google's Compute API quotes in its 400
# answers: (?:(?:[-a-z0-9]{1,63}\.)*(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?):)?(?:[0-9]{1,19}|...)
# (github.com/perkeep/perkeep/issues/571).
_LABEL = r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"
PROJECT_PATTERN = (rf"[a-z][-a-z0-9]{{4,28}}[a-z0-9]|[0-9]{{1,19}}"
                   rf"|(?:[-a-z0-9]{{1,63}}\.)*{_LABEL}:{_LABEL}")
# A region-like id (us-central1, europe-west4, global, us, eu, ...), with no allow-list: new
# regions appear. The cap: Vertex's host is {location}-aiplatform.googleapis.com, and that first
# DNS label must fit in 63 characters, so a location has at most 63 - 11 = 52.
LOCATION_PATTERN = r"[a-z][-a-z0-9]{0,50}[a-z0-9]"
MAX_DOMAIN_LENGTH = 253  # a DNS name, for the domain of a domain-scoped project id
_PROJECT_RE = re.compile(PROJECT_PATTERN)
_LOCATION_RE = re.compile(LOCATION_PATTERN)

# What Google answers for a malformed project in a request path: 400 INVALID_ARGUMENT
# "Invalid resource field value in the request." with ErrorInfo reason RESOURCE_PROJECT_INVALID
# from its API front end (domain googleapis.com), as quoted for Compute
# (github.com/trailofbits/algo/issues/14854, github.com/opencost/opencost/issues/2326) and
# Artifact Registry (github.com/googleapis/python-artifact-registry/issues/118). Vertex sits
# behind the same front end, so its answer is inferred to be the same; the front end also names
# the RPC in metadata.method, which this call-agnostic check leaves out.
INVALID_PROJECT_MESSAGE = "Invalid resource field value in the request."
# What Vertex's (and AutoML's) backends answer for a bad location id: 400 INVALID_ARGUMENT
# "List of found errors:\t1.Field: parent; Message: The provided location ID ...\t" plus a
# google.rpc.BadRequest field violation (github.com/googleapis/python-aiplatform/issues/1684,
# github.com/googleapis/nodejs-automl/issues/263 "The provided location ID is not valid.").
INVALID_LOCATION_DESCRIPTION = "The provided location ID is not valid."


def _project_ok(project: str) -> bool:
    domain, scoped, _ = project.rpartition(":")
    if scoped and len(domain) > MAX_DOMAIN_LENGTH:
        return False
    return _PROJECT_RE.fullmatch(project) is not None


def check_parent(project: str, location: str, *, field: str = "parent") -> None:
    """Refuse what Vertex refuses in projects/{project}/locations/{location} (both already
    percent-decoded), with Vertex's own 400 INVALID_ARGUMENT answer: the project is checked
    first, as Google's front end resolves it before the service sees the request. `field` is
    the request field holding the path ("parent" for create/list, "name" for get/cancel)."""
    if not _project_ok(project):
        raise InvalidArgument(INVALID_PROJECT_MESSAGE, details=[{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RESOURCE_PROJECT_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "aiplatform.googleapis.com"},
        }])
    if not _LOCATION_RE.fullmatch(location):
        raise InvalidArgument(
            f"List of found errors:\t1.Field: {field}; Message: {INVALID_LOCATION_DESCRIPTION}\t",
            details=[{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field,
                                     "description": INVALID_LOCATION_DESCRIPTION}],
            }],
        )


# --------------------------------------------------------------------------------------------
# Query helpers


def wants_int_enums(query: Mapping[str, str]) -> bool:
    """True when the request carries `$alt=json;enum-encoding=int` (any case, any order)."""
    for key, value in query.items():
        if key.lower() not in ("$alt", "alt") or not isinstance(value, str):
            continue
        params = {p.strip().lower().replace(" ", "") for p in value.split(";")}
        if "enum-encoding=int" in params:
            return True
    return False


def parse_page_size(value: str | None, *, default: int = 50, maximum: int = 100) -> int:
    """pageSize query value -> int (0/absent -> default, > maximum -> maximum, negative or not an
    int -> InvalidArgument)."""
    if value is None or value.strip() == "":
        return default
    n = _parse_int(value.strip(), _INT32_RANGE)
    if n is None:
        raise _bad_value("page_size", "TYPE_INT32", value)
    if n < 0:
        raise InvalidArgument(f"Invalid page_size: {n}. It must not be negative.")
    if n == 0:
        return default
    return min(n, maximum)


# --------------------------------------------------------------------------------------------
# Page tokens

_TOKEN_VERSION = b"\x01"
# Keyless on purpose: tokens must survive a daemon restart. The checksum only catches
# corruption/tampering by accident or by hand, which is all an offset cursor needs.
_TOKEN_DOMAIN = b"tuningd/page-token/v1"


def _filter_digest(filter_text: str, scope: str = "") -> bytes:
    material = _TOKEN_DOMAIN + b"|filter|" + filter_text.strip().encode()
    if scope:
        material += b"|scope|" + scope.encode("utf-8", "surrogatepass")
    return hashlib.sha256(material).digest()[:8]


def _token_checksum(body: bytes) -> bytes:
    return hashlib.sha256(_TOKEN_DOMAIN + b"|sum|" + body).digest()[:8]


def encode_page_token(offset_key: str, filter_text: str, scope: str = "") -> str:
    """An opaque page token that resumes after offset_key for this filter (and scope, e.g. the
    list's parent: a token from another collection is then refused)."""
    body = _TOKEN_VERSION + _filter_digest(filter_text, scope) + offset_key.encode("utf-8")
    return base64.urlsafe_b64encode(body + _token_checksum(body)).decode("ascii").rstrip("=")


def decode_page_token(token: str, filter_text: str, scope: str = "") -> str:
    """The offset_key of a token from encode_page_token; a forged, corrupt, foreign-filter or
    foreign-scope token -> InvalidArgument. An empty token decodes to "" (start from the
    beginning)."""
    if token == "":
        return ""
    invalid = InvalidArgument("Invalid page token.")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", token) or len(token) % 4 == 1 or len(token) > 4096:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise invalid from None
    if len(raw) < 17 or raw[:1] != _TOKEN_VERSION:
        raise invalid
    body, checksum = raw[:-8], raw[-8:]
    if checksum != _token_checksum(body) or body[1:9] != _filter_digest(filter_text, scope):
        raise invalid
    try:
        return body[9:].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid from None


# --------------------------------------------------------------------------------------------
# Error envelope


def error_envelope(err: TuningdError) -> dict[str, Any]:
    """Google's error envelope: {"error": {"code": <http>, "message": ..., "status": <NAME>}}
    (plus "details" when the error has any)."""
    body: dict[str, Any] = {"code": err.http_status, "message": err.message, "status": err.status}
    if err.details:
        body["details"] = copy.deepcopy(err.details)
    return {"error": body}


# --------------------------------------------------------------------------------------------
# List filter (AIP-160 subset, spec §1)

Predicate = Callable[[Mapping[str, Any]], bool]

_COMPARATORS = ("<=", ">=", "!=", "=", "<", ">", ":")
_WORD_STOP = set(" \t\r\n()=<>!:\"'")
_DISPLAY_FIELDS = {"display_name": "tunedModelDisplayName",
                   "displayName": "tunedModelDisplayName",
                   "tuned_model_display_name": "tunedModelDisplayName",
                   "tunedModelDisplayName": "tunedModelDisplayName"}
_TIME_FIELDS = {"create_time": "createTime", "createTime": "createTime",
                "update_time": "updateTime", "updateTime": "updateTime",
                "start_time": "startTime", "startTime": "startTime",
                "end_time": "endTime", "endTime": "endTime"}
_STATE_FIELDS = ("state",)
_TIME_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class _Tok:
    kind: str  # "(" ")" "cmp" "word" "str" "AND" "OR" "NOT" "-" "eof"
    text: str
    pos: int


def _filter_error(detail: str) -> InvalidArgument:
    return InvalidArgument(f"Invalid filter: {detail}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        prev = toks[-1].kind if toks else ""
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(_Tok(c, c, i))
            i += 1
        elif c in "=<>!:":
            op = next((o for o in _COMPARATORS if text.startswith(o, i)), None)
            if op is None:
                raise _filter_error(f"unexpected character '{c}' at position {i}.")
            toks.append(_Tok("cmp", op, i))
            i += len(op)
        elif c in "\"'":
            start, i, buf = i, i + 1, []
            while True:
                if i >= n:
                    raise _filter_error(f"unterminated string starting at position {start}.")
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                    i += 2
                elif ch == c:
                    i += 1
                    break
                else:
                    buf.append(ch)
                    i += 1
            toks.append(_Tok("str", "".join(buf), start))
        elif c == "-" and prev != "cmp":
            toks.append(_Tok("-", "-", i))
            i += 1
        else:
            start = i
            # A value right after a comparator may hold ':' (unquoted RFC 3339 timestamps).
            stop = _WORD_STOP - {":"} if prev == "cmp" else _WORD_STOP
            while i < n and text[i] not in stop:
                i += 1
            word = text[start:i]
            kind = word if word in ("AND", "OR", "NOT") else "word"
            toks.append(_Tok(kind, word, start))
    toks.append(_Tok("eof", "", n))
    return toks


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.DOTALL)


def _enum_value_name(value: Any, numbers: Mapping[str, int]) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return next((k for k, v in numbers.items() if v == value), None)
    return None


def _state_name(value: str) -> str:
    """A `state` filter value (name in any case, or its number) -> the JobState name."""
    name = value.upper()
    if name.isdigit():
        name = _enum_value_name(int(name), JOB_STATE_NUMBERS) or name
    if name not in JOB_STATE_NUMBERS:
        raise _filter_error(f"unknown state value '{value}'.")
    return name


@dataclass(frozen=True)
class _Cond:
    """An index-answerable restriction: ("state", "", JobState name) or ("label", key, value)."""

    kind: str
    key: str
    value: str


def _pushable(field: str, op: str, value: str) -> _Cond | None:
    """The index form of one restriction (already validated by _restriction), if it has one.
    Only equality: `!=` and `:` (presence, wildcards) are left to the predicate."""
    if op != "=":
        return None
    if field.startswith("labels.") and field != "labels.":
        return _Cond("label", field[len("labels."):], value)
    if field in _STATE_FIELDS:
        return _Cond("state", "", _state_name(value))
    return None


def _restriction(field: str, op: str, value: str, tok: _Tok) -> Predicate:
    if field == "labels" or field.startswith("labels."):
        key = field[len("labels."):] if field != "labels" else None
        if key == "":
            raise _filter_error(f"empty label key in '{field}'.")
        if key is None:
            if op != ":":
                raise _filter_error(f"operator '{op}' is not supported for 'labels'.")
            return lambda job: value in (job.get("labels") or {})
        if op == ":":
            if value == "*":
                return lambda job: key in (job.get("labels") or {})
            rx = _glob(value)
            return lambda job: (key in (job.get("labels") or {})
                                and rx.fullmatch(str(job["labels"][key])) is not None)
        if op == "=":
            return lambda job: (job.get("labels") or {}).get(key) == value
        if op == "!=":
            return lambda job: (job.get("labels") or {}).get(key) != value
        raise _filter_error(f"operator '{op}' is not supported for '{field}'.")
    if field in _STATE_FIELDS:
        name = _state_name(value)
        if op == "=":
            return lambda job: _enum_value_name(job.get("state"), JOB_STATE_NUMBERS) == name
        if op == "!=":
            return lambda job: _enum_value_name(job.get("state"), JOB_STATE_NUMBERS) != name
        raise _filter_error(f"operator '{op}' is not supported for 'state'.")
    if field in _DISPLAY_FIELDS:
        attr = _DISPLAY_FIELDS[field]
        if op == "=":
            return lambda job: (job.get(attr) or "") == value
        if op == "!=":
            return lambda job: (job.get(attr) or "") != value
        if op == ":":
            rx = _glob(value)
            return lambda job: rx.fullmatch(job.get(attr) or "") is not None
        raise _filter_error(f"operator '{op}' is not supported for '{field}'.")
    if field in _TIME_FIELDS:
        attr = _TIME_FIELDS[field]
        bound = _ts_to_micros(value)
        if bound is None:
            raise _filter_error(f"invalid timestamp '{value}' for '{field}' (expected RFC 3339, "
                                'e.g. "2021-05-18T00:00:00Z").')
        if op not in _TIME_OPS:
            raise _filter_error(f"operator '{op}' is not supported for '{field}'.")
        cmp = _TIME_OPS[op]

        def time_pred(job: Mapping[str, Any]) -> bool:
            raw = job.get(attr)
            micros = _ts_to_micros(raw) if isinstance(raw, str) else None
            if micros is None:
                return op == "!="
            return cmp(micros, bound)

        return time_pred
    raise _filter_error(f"unsupported field '{field}' at position {tok.pos}. Supported: "
                        "labels.<key>, state, display_name, create_time.")


MAX_FILTER_DEPTH = 32


class _FilterParser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def unexpected(self, tok: _Tok) -> InvalidArgument:
        if tok.kind == "eof":
            return _filter_error("unexpected end of filter.")
        return _filter_error(f"unexpected token '{tok.text}' at position {tok.pos}.")

    def parse(self) -> tuple[Predicate, list[_Cond]]:
        """The predicate of the whole filter and its necessary index-answerable conditions."""
        if self.peek().kind == "eof":
            return (lambda job: True), []
        pred, conds = self.expression()
        if self.peek().kind != "eof":
            raise self.unexpected(self.peek())
        return pred, conds

    # AIP-160: expression = sequence {AND sequence}; sequence = factor {factor};
    # factor = term {OR term}. So OR binds tighter than AND and juxtaposition.
    # Each method also returns the conditions every matching job must meet: the union of its
    # conjuncts' conditions; none from an OR of several terms or from under NOT.
    def expression(self) -> tuple[Predicate, list[_Cond]]:
        pred, conds = self.sequence()
        preds = [pred]
        while self.peek().kind == "AND":
            self.take()
            pred, more = self.sequence()
            preds.append(pred)
            conds += more
        return _all(preds), conds

    def sequence(self) -> tuple[Predicate, list[_Cond]]:
        pred, conds = self.factor()
        preds = [pred]
        while self.peek().kind in ("word", "str", "(", "NOT", "-"):
            pred, more = self.factor()
            preds.append(pred)
            conds += more
        return _all(preds), conds

    def factor(self) -> tuple[Predicate, list[_Cond]]:
        first, conds = self.term()
        preds = [first]
        while self.peek().kind == "OR":
            self.take()
            preds.append(self.term()[0])
        if len(preds) == 1:
            return first, conds
        return (lambda job: any(p(job) for p in preds)), []

    def term(self) -> tuple[Predicate, list[_Cond]]:
        if self.peek().kind in ("NOT", "-"):
            self.take()
            inner = self.simple()[0]
            return (lambda job: not inner(job)), []
        return self.simple()

    def simple(self) -> tuple[Predicate, list[_Cond]]:
        tok = self.take()
        if tok.kind == "(":
            # An explicit bound: neither parsing nor evaluating may hit the recursion limit.
            self.depth += 1
            if self.depth > MAX_FILTER_DEPTH:
                raise _filter_error(
                    f"filter is nested too deeply (at most {MAX_FILTER_DEPTH} parentheses).")
            pred, conds = self.expression()
            self.depth -= 1
            close = self.take()
            if close.kind != ")":
                raise self.unexpected(close)
            return pred, conds
        if tok.kind != "word":
            raise self.unexpected(tok)
        cmp = self.take()
        if cmp.kind != "cmp":
            if cmp.kind == "eof" or cmp.kind in ("AND", "OR", ")"):
                raise _filter_error(
                    f"'{tok.text}' at position {tok.pos} needs a comparison such as "
                    f"{tok.text}=value (bare values are not supported).")
            raise self.unexpected(cmp)
        arg = self.take()
        if arg.kind not in ("word", "str"):
            raise self.unexpected(arg)
        pred = _restriction(tok.text, cmp.text, arg.text, tok)
        cond = _pushable(tok.text, cmp.text, arg.text)
        return pred, [] if cond is None else [cond]


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    return lambda job: all(p(job) for p in preds)


def _parse_filter(text: str) -> tuple[Predicate, list[_Cond]]:
    if len(text) > 20_000:
        raise _filter_error("filter is too long.")
    try:
        return _FilterParser(text).parse()
    except RecursionError:
        raise _filter_error("filter is nested too deeply.") from None


def compile_filter(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile an AIP-160 list filter (labels.k=v, labels.k:*, state, display_name,
    create_time comparisons, AND/OR/NOT, parentheses) into a predicate on canonical jobs.
    Empty text matches everything. Unparseable text -> InvalidArgument."""
    return _parse_filter(text)[0]


@dataclass(frozen=True)
class FilterPushdown:
    """Necessary conditions of a list filter that the store's indexes can answer.

    Every job the filter matches is in one of `states` (None: any state) and has every
    `labels` key = value; the converse need not hold, so the filter stays the final check.
    An empty `states` means the filter matches no job at all (`never`)."""

    states: frozenset[LocalState] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def never(self) -> bool:
        return self.states is not None and not self.states


_LOCAL_STATES_OF: Mapping[str, frozenset[LocalState]] = {
    name: frozenset(s for s, remote in LOCAL_TO_REMOTE.items() if remote.value == name)
    for name in JOB_STATE_NUMBERS
}


def filter_pushdown(text: str) -> FilterPushdown:
    """The top-level AND-ed `state = X` and `labels.k = "v"` restrictions of a list filter (as
    compile_filter parses it), mapped to local states and label equalities. Restrictions under
    OR or NOT, `!=`, `:` and other fields give nothing. Unparseable text -> InvalidArgument."""
    states: frozenset[LocalState] | None = None
    labels: dict[str, str] = {}
    never = False
    for cond in _parse_filter(text)[1]:
        if cond.kind == "state":
            local = _LOCAL_STATES_OF[cond.value]
            states = local if states is None else states & local
        elif labels.setdefault(cond.key, cond.value) != cond.value:
            never = True  # labels.k = "a" AND labels.k = "b"
    if never:
        states = frozenset()
    return FilterPushdown(states=states, labels=labels)
