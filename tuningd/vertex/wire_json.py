"""Proto3 JSON primitives: request bodies as Google's front end reads them, RFC 3339 timestamps."""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tuningd.core.errors import InvalidArgument

__all__ = ["MAX_JSON_DEPTH", "format_timestamp", "json_error", "json_kind", "micros_to_text",
           "parse_json_body", "parse_timestamp", "ts_to_micros"]


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


def ts_to_micros(text: str) -> int | None:
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


@functools.lru_cache(maxsize=256)
def _second_text(seconds: int) -> str:
    dt = _EPOCH + timedelta(seconds=seconds)
    # f-string rather than strftime: %Y does not zero-pad years < 1000 on glibc.
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
            f"{dt.second:02d}")


def micros_to_text(micros: int) -> str:
    # Every reply carries two or more times, mostly of the current second: the date part of a
    # second is built once (a datetime per call was a tenth of a create's cost).
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{_second_text(seconds)}.{fraction:06d}Z"


def format_timestamp(unix_s: float) -> str:
    """Unix seconds -> RFC 3339 UTC with microseconds and Z."""
    if not math.isfinite(unix_s):
        raise InvalidArgument(f"Invalid timestamp: {unix_s!r}")
    micros = round(unix_s * 1_000_000)
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise InvalidArgument(f"Timestamp out of range: {unix_s!r}")
    return micros_to_text(micros)


def parse_timestamp(text: str) -> float:
    """RFC 3339 (0-9 fractional digits, Z or offset) -> Unix seconds; bad text -> InvalidArgument.
    """
    micros = ts_to_micros(text) if isinstance(text, str) else None
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


def json_error(detail: str) -> InvalidArgument:
    return InvalidArgument(f"Invalid JSON payload received. {detail}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise json_error(f'Duplicate key "{key[:200]}".')
        out[key] = value
    return out


def _parse_json_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise json_error(f"Number out of range: {text[:40]}...")
    return int(text)


def _parse_json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise json_error(f"Number out of range: {text[:40]}")
    return value


def _check_json_tree(value: Any) -> None:
    """Depth limit and valid Unicode in every string, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE_RE.search(node):
                raise json_error("Invalid \\u escape: unpaired UTF-16 surrogate.")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise json_error(f"Message too deep. Max recursion depth is {MAX_JSON_DEPTH}.")
        if isinstance(node, dict):
            stack.extend((k, depth) for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        else:
            stack.extend((v, depth + 1) for v in node)


class _ConstantLiteral(Exception):
    """A NaN / Infinity / -Infinity literal met by the decoder."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity literals; JSON (and Google) does not.
    raise _ConstantLiteral(name)


# One decoder for every body: json.loads with hooks would build a decoder and its scanner per
# call, which cost as much as the parse of a create body itself.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_json_int,
                            parse_float=_parse_json_float, object_pairs_hook=_no_duplicates)


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
        raise json_error(f"Invalid UTF-8 at byte {exc.start}.") from None
    if not text.strip():
        return {}

    try:
        try:
            if text.startswith("\ufeff"):  # as json.loads refuses a BOM
                raise json.JSONDecodeError("Unexpected UTF-8 BOM", text, 0)
            value = _DECODER.decode(text)
        except _ConstantLiteral as literal:
            raise json.JSONDecodeError("Unexpected token", text, text.index(literal.name)) \
                from None
    except json.JSONDecodeError as exc:
        line = text.splitlines()[exc.lineno - 1] if text.splitlines() else ""
        caret = " " * max(exc.colno - 1, 0) + "^"
        raise InvalidArgument(
            "Invalid JSON payload received. Unexpected token.\n"
            f"{line[:200]}\n{caret[:201]}") from None
    except RecursionError:
        raise json_error(
            f"Message too deep. Max recursion depth is {MAX_JSON_DEPTH}.") from None
    except ValueError as exc:  # any other conversion limit of the json module
        raise json_error(f"Unexpected value: {str(exc)[:200]}") from None
    # What the walk looks for needs, in the text, a \u escape (a lone surrogate cannot be UTF-8)
    # or more than MAX_JSON_DEPTH brackets: a body with neither is not walked (most creates).
    if "\\u" in text or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        _check_json_tree(value)
    return value


def json_kind(value: Any) -> str:
    """How Google's messages name the JSON type of a value ("a string", "an array", ...)."""
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
