"""The TuningJob codec: either JSON dialect in, canonical form, proto3 JSON out, at each version.

The *canonical form* of a TuningJob is a plain dict:
  - keys are lowerCamelCase JSON names at every level (map keys such as label keys untouched);
  - int64/uint64 fields are Python ints; double/float fields are floats; bools are bools;
  - enum fields hold their NAME as str (e.g. "ADAPTER_SIZE_FOUR", "JOB_STATE_RUNNING");
  - Timestamp fields hold RFC 3339 UTC strings with microseconds and "Z";
  - bytes and Duration fields hold their JSON strings; Struct, Value, ListValue and Any values
    are the JSON values themselves;
  - unset and default fields are absent, except fields with presence (oneof members, proto3
    `optional`), which keep an explicitly set default (0, "", false, {}).
The canonical form round-trips: parse_tuning_job(render_tuning_job(x)) == x.
The schema is tuningd.vertex.schema (every field of both versions' protos, plus the supplement).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from tuningd.core.errors import InvalidArgument
from tuningd.vertex.schema import API_VERSIONS, Field, Message, Schema, schema
from tuningd.vertex.wire_json import (
    format_timestamp,
    json_kind,
    micros_to_text,
    ts_to_micros,
)

__all__ = ["parse_tuning_job", "render_tuning_job", "strip_output_only", "type_url"]

ROOT_PATH = "tuning_job"
_RANGES = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1),
           "uint64": (0, 2**64 - 1), "uint32": (0, 2**32 - 1)}
_FLOAT_MAX = 3.4028234663852886e38
_WELL_KNOWN = {"timestamp": "Timestamp", "duration": "Duration", "struct": "Struct",
               "value": "Value", "listvalue": "ListValue", "any": "Any"}
_DURATION_RE = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{1,9})?s")
_MAX_DURATION_S = 315_576_000_000


def type_url(type_name: str, api_version: str | None) -> str:
    """type.googleapis.com/<full name> of a message or enum named relative to the package."""
    if type_name.startswith("google."):
        return f"type.googleapis.com/{type_name}"
    ver = "v1beta1" if api_version == "v1beta1" else "v1"
    return f"type.googleapis.com/google.cloud.aiplatform.{ver}.{type_name}"


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------------------------------------
# Parsing (either dialect -> canonical)


class _Ctx:
    def __init__(self, ignore_unknown: bool, api_version: str | None) -> None:
        self.ignore_unknown = ignore_unknown
        self.api_version = api_version


def _type_label(f: Field, ctx: _Ctx) -> str:
    if f.map and not f.repeated:
        return f"map<string, {_value_label(f, ctx)}>"
    return _value_label(f, ctx)


def _value_label(f: Field, ctx: _Ctx) -> str:
    if f.kind in ("enum", "message"):
        return type_url(f.type_name, ctx.api_version)
    if f.kind in _WELL_KNOWN:
        return f"type.googleapis.com/google.protobuf.{_WELL_KNOWN[f.kind]}"
    return f"TYPE_{f.kind.upper()}"


def _bad_value(path: str, label: str, value: Any) -> InvalidArgument:
    return InvalidArgument(f"Invalid value at '{path}' ({label}), {_dump(value)}")


_INT_RE = re.compile(r"-?[0-9]+")
_MAX_INT_DIGITS = 20  # uint64 max is 18446744073709551615
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def parse_int(value: Any, bounds: tuple[int, int]) -> int | None:
    """A JSON number or numeric string -> int within bounds, else None."""
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
        # Python's int() refuses more than 4,300 digits with a ValueError; no 64-bit field holds
        # more than 20 significant ones, so longer strings are out of range without converting.
        if len(value.lstrip("-").lstrip("0")) > _MAX_INT_DIGITS:
            return None
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


def _bytes_ok(value: str) -> bool:
    # Proto3 JSON: standard or URL-safe base64, padding optional.
    text = value.replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _duration_ok(value: str) -> bool:
    if not _DURATION_RE.fullmatch(value):
        return False
    return abs(float(value[:-1])) <= _MAX_DURATION_S


_FREE_FORM = frozenset({"bytes", "duration", "struct", "any", "listvalue", "value"})


def _shape_ok(kind: str, value: Any) -> bool:
    """Whether a JSON value fits a bytes, Duration, Struct, Any, ListValue or Value field."""
    if kind == "bytes":
        return isinstance(value, str) and _bytes_ok(value)
    if kind == "duration":
        return isinstance(value, str) and _duration_ok(value)
    if kind in ("struct", "any"):
        return isinstance(value, dict)
    if kind == "listvalue":
        return isinstance(value, list)
    return True


def _parse_enum(f: Field, value: Any, path: str, ctx: _Ctx) -> Any:
    assert f.enum is not None
    if isinstance(value, str) and value in f.enum.numbers:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in f.enum.names:
        return f.enum.names[value]
    if ctx.ignore_unknown and isinstance(value, str | int) and not isinstance(value, bool):
        # Like json_format's ignore_unknown_fields: a value added to the enum after this
        # schema was written must not make a newer server's answer unreadable.
        return None
    raise _bad_value(path, _value_label(f, ctx), value)


def _parse_value(f: Field, value: Any, path: str, ctx: _Ctx) -> Any:
    """One non-null value of field f's type -> canonical value (defaults included)."""
    kind = f.kind
    if kind == "string":
        if not isinstance(value, str):
            raise _bad_value(path, "TYPE_STRING", value)
        return value
    if kind in _RANGES:
        n = parse_int(value, _RANGES[kind])
        if n is None:
            raise _bad_value(path, _value_label(f, ctx), value)
        return n
    if kind in ("double", "float"):
        d = _parse_double(value)
        if d is None or (kind == "float" and math.isfinite(d) and abs(d) > _FLOAT_MAX):
            raise _bad_value(path, _value_label(f, ctx), value)
        return d
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise _bad_value(path, "TYPE_BOOL", value)
    if kind == "enum":
        return _parse_enum(f, value, path, ctx)
    if kind == "timestamp":
        micros = ts_to_micros(value) if isinstance(value, str) else None
        if micros is None:
            raise _bad_value(path, _value_label(f, ctx), value)
        return micros_to_text(micros)
    if kind in _FREE_FORM:
        if not _shape_ok(kind, value):
            raise _bad_value(path, _value_label(f, ctx), value)
        return copy.deepcopy(value)
    if kind == "message":
        assert f.message is not None
        if not isinstance(value, dict):
            raise _bad_value(path, _value_label(f, ctx), value)
        return _parse_message(f.message, value, path, ctx)
    raise AssertionError(kind)  # pragma: no cover - schema bug


def _is_default(value: Any) -> bool:
    if value is None or value is False:
        return True
    if isinstance(value, str | list | dict):
        return len(value) == 0
    if isinstance(value, int | float):
        return value == 0
    return False


def _is_default_of(f: Field, value: Any) -> bool:
    if f.kind == "enum" and not f.repeated and not f.map:
        assert f.enum is not None
        if value == f.enum.default_name or (isinstance(value, int) and value == 0):
            return True
    return _is_default(value)


def _default_for(f: Field) -> Any:
    if f.kind in ("message", "struct", "any"):
        return {}
    if f.kind == "enum":
        assert f.enum is not None
        return f.enum.default_name
    if f.kind == "listvalue":
        return []
    return {"string": "", "bytes": "", "duration": "0s", "bool": False, "double": 0.0,
            "float": 0.0}.get(f.kind, 0)


def _parse_field(f: Field, value: Any, path: str, ctx: _Ctx, key: str, parent: str) -> Any:
    if f.map:
        if not isinstance(value, dict):
            raise _bad_value(path, _type_label(f, ctx), value)
        entries: dict[str, Any] = {}
        for k, v in value.items():
            if v is None and f.kind == "value":
                entries[k] = None
                continue
            if v is None or (isinstance(v, list) and f.kind not in ("value", "listvalue")):
                raise _bad_value(f"{path}[{k}]", _value_label(f, ctx), v)
            parsed_entry = _parse_value(f, v, f"{path}[{k}]", ctx)
            entries[k] = _default_for(f) if parsed_entry is None else parsed_entry
        return entries or None
    if not f.repeated:
        if isinstance(value, list) and f.kind not in ("value", "listvalue"):
            raise InvalidArgument(
                f'Invalid JSON payload received. Unknown name "{key}" at \'{parent}\': '
                "Proto field is not repeating, cannot start list.")
        parsed = _parse_value(f, value, path, ctx)
        if f.presence:
            return parsed
        return None if _is_default_of(f, parsed) else parsed
    if not isinstance(value, list):
        raise _bad_value(path, _type_label(f, ctx), value)
    out: list[Any] = []
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        if item is None or (isinstance(item, list) and f.kind not in ("value", "listvalue")):
            raise _bad_value(item_path, _value_label(f, ctx), item)
        parsed = _parse_value(f, item, item_path, ctx)
        # Defaults inside a list still occupy a slot.
        out.append(_default_for(f) if parsed is None else parsed)
    return out or None


def _parse_message(msg: Message, obj: Mapping[str, Any], path: str,
                   ctx: _Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in obj.items():
        f = msg.lookup.get(key)
        if f is None:
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
    Cannot find field.') unless ignore_unknown; wrong types, bad enum values and two members of
    one oneof raise InvalidArgument naming the field path.

    api_version: None accepts the union of v1 and v1beta1 fields; "v1" or "v1beta1" treats the
    fields the other version alone has as unknown; it also picks the package shown in type URLs
    of error messages (v1 for None).
    """
    if api_version is not None and api_version not in API_VERSIONS:
        raise InvalidArgument(f"Unsupported API version: {api_version}")
    if not isinstance(body, dict):
        raise InvalidArgument(
            f"Invalid JSON payload received. Expected an object at '{ROOT_PATH}', "
            f"got {json_kind(body)}.")
    return _parse_message(schema(api_version).root, body, ROOT_PATH,
                          _Ctx(ignore_unknown, api_version))


# --------------------------------------------------------------------------------------------
# Rendering (canonical -> proto3 JSON)


def _render_value(f: Field, value: Any, enum_as_int: bool, union: Schema) -> Any:
    """Lenient: accepts canonical values and also the obvious near-canonical ones."""
    kind = f.kind
    if kind in ("int64", "uint64"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)
    if kind in ("int32", "uint32"):
        return int(value)
    if kind in ("double", "float"):
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
        micros = ts_to_micros(value) if isinstance(value, str) else None
        return value if micros is None else micros_to_text(micros)
    if kind == "message":
        assert f.message is not None
        if not isinstance(value, Mapping):
            return copy.deepcopy(value)
        return _render_message(f.message, value, enum_as_int, union)
    return copy.deepcopy(value)


def _render_message(msg: Message, job: Mapping[str, Any], enum_as_int: bool,
                    union: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known_elsewhere = union.messages.get(msg.type_name)
    for key, value in job.items():
        f = msg.lookup.get(key)
        if f is None:
            if known_elsewhere is not None and key in known_elsewhere.lookup:
                continue  # a field of the other API version
            # Not in the schema (e.g. a pass-through extension): copied unchanged.
            if value is not None:
                out[key] = copy.deepcopy(value)
            continue
        if value is None or (not f.presence and _is_default_of(f, value)):
            continue
        rendered: Any
        if f.map and isinstance(value, Mapping):
            rendered = {k: (None if v is None else _render_value(f, v, enum_as_int, union))
                        for k, v in value.items()}
        elif f.repeated and isinstance(value, list):
            rendered = [_render_value(f, v, enum_as_int, union) for v in value]
        else:
            rendered = _render_value(f, value, enum_as_int, union)
            if f.kind == "message" and not rendered and not f.presence:
                continue
        out[f.json] = rendered
    return out


def render_tuning_job(job: Mapping[str, Any], *, enum_as_int: bool = False,
                      api_version: str = "v1") -> dict[str, Any]:
    """Canonical form -> proto3 JSON dict (int64 as strings, enums as names or ints, empty
    fields omitted). Fields only the other API version has (for "v1": tuningJobState,
    distillationSpec, ...) are dropped.

    Keys outside the TuningJob schema of both versions are copied unchanged (callers may add
    extension objects).
    """
    if api_version not in API_VERSIONS:
        raise InvalidArgument(f"Unsupported API version: {api_version}")
    return _render_message(schema(api_version).root, job, enum_as_int, schema(None))


# --------------------------------------------------------------------------------------------
# Output-only fields


def _strip(msg: Message, job: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in job.items():
        f = msg.lookup.get(key)
        if f is not None and f.output:
            continue
        if f is not None and f.message is not None:
            if f.map and isinstance(value, dict):
                value = {k: _strip(f.message, v) if isinstance(v, dict) else copy.deepcopy(v)
                         for k, v in value.items()}
            elif f.repeated and isinstance(value, list):
                value = [_strip(f.message, v) if isinstance(v, dict) else copy.deepcopy(v)
                         for v in value]
            elif isinstance(value, dict):
                value = _strip(f.message, value)
                if not value and not f.presence:
                    continue
        out[key] = copy.deepcopy(value)
    return out


def strip_output_only(job: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a canonical TuningJob without output-only fields (name, state, times, error,
    tunedModel, preTunedModel.baseModel, ...), which Vertex ignores in a create body."""
    return _strip(schema(None).root, job)

