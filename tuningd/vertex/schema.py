"""The Vertex TuningJob schema per API version, built from the generated data and the supplement.

Data rows (tuningd/vertex_schema_{common,v1,v1beta1}.py, generated from the installed protos, and
tuningd/vertex/schema_extra.py, kept by hand) are tuples
    (proto name, JSON name, kind, type name, flags)
kind: string, bool, bytes, double, float, int32, int64, uint32, uint64 (scalars); enum or message
(the type name says which, relative to google.cloud.aiplatform.{version}, or a google.* name);
timestamp, duration, struct, value, listvalue, any (well-known types with their own JSON forms).
flags, space separated: repeated; map (a map<string, kind>); output (OUTPUT_ONLY); required;
oneof=<name> (a member of that oneof); optional (proto3 `optional`). Oneof members and optional
fields have presence: an explicit default value (0, "", false, {}) is kept, not dropped.

`schema(version)` gives the messages of "v1" or "v1beta1"; `schema(None)` the union of both (for
answers whose version is unknown).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache

from tuningd.vertex import schema_common as common
from tuningd.vertex import schema_extra as extra
from tuningd.vertex import schema_v1 as v1
from tuningd.vertex import schema_v1beta1 as v1beta1

__all__ = ["API_VERSIONS", "ROOT", "Enum", "Field", "Message", "Schema", "schema"]

API_VERSIONS: tuple[str, ...] = ("v1", "v1beta1")
ROOT = "TuningJob"
SCALAR_KINDS = frozenset({"string", "bool", "bytes", "double", "float", "int32", "int64",
                          "uint32", "uint64"})

Row = tuple[str, str, str, str, str]
_GENERATED = {"v1": v1, "v1beta1": v1beta1}


class Enum:
    """One enum type: its values by name and by number."""

    def __init__(self, type_name: str, values: tuple[tuple[str, int], ...]) -> None:
        self.type_name = type_name
        self.numbers: dict[str, int] = dict(values)
        self.names: dict[int, str] = {}
        for name, number in values:
            self.names.setdefault(number, name)  # aliases: the first name wins
        self.default_name = self.names.get(0, values[0][0] if values else "")


class Field:
    """One field of a message."""

    def __init__(self, row: Row) -> None:
        self.proto, self.json, self.kind, self.type_name, flags = row
        words = flags.split()
        self.repeated = "repeated" in words
        self.map = "map" in words
        self.output = "output" in words
        self.required = "required" in words
        self.oneof = next((w[len("oneof="):] for w in words if w.startswith("oneof=")), "")
        self.presence = bool(self.oneof) or "optional" in words
        self.message: Message | None = None
        self.enum: Enum | None = None


class Message:
    """One message type: its fields, looked up by JSON or proto name."""

    def __init__(self, type_name: str, rows: tuple[Row, ...]) -> None:
        self.type_name = type_name
        self.fields = [Field(row) for row in rows]
        self.lookup: dict[str, Field] = {}
        for f in self.fields:
            self.lookup[f.json] = f
            self.lookup.setdefault(f.proto, f)
        self.oneofs: dict[str, list[Field]] = {}
        for f in self.fields:
            if f.oneof:
                self.oneofs.setdefault(f.oneof, []).append(f)


class Schema:
    """Every message and enum TuningJob reaches at one API version (or the union)."""

    def __init__(self, version: str | None, messages: Mapping[str, tuple[Row, ...]],
                 enums: Mapping[str, tuple[tuple[str, int], ...]]) -> None:
        self.version = version
        self.enums = {name: Enum(name, values) for name, values in enums.items()}
        self.messages = {name: Message(name, rows) for name, rows in messages.items()}
        for msg in self.messages.values():
            for f in msg.fields:
                if f.kind == "message":
                    f.message = self.messages[f.type_name]
                elif f.kind == "enum":
                    f.enum = self.enums[f.type_name]
        self.root = self.messages[ROOT]

    def walk(self, msg: Message | None = None, prefix: str = "",
             seen: frozenset[str] = frozenset()) -> Iterator[tuple[str, Field]]:
        """(dotted JSON path, field) of every field reachable from msg (default TuningJob),
        each recursive message expanded once per path."""
        msg = msg or self.root
        for f in msg.fields:
            path = f"{prefix}{f.json}"
            yield path, f
            if f.message is not None and f.message.type_name not in seen:
                yield from self.walk(f.message, path + ".", seen | {msg.type_name})


def _rows(version: str) -> tuple[dict[str, tuple[Row, ...]], dict[str, tuple[tuple[str, int],
                                                                              ...]]]:
    messages = dict(common.MESSAGES) | dict(_GENERATED[version].MESSAGES)
    enums = dict(common.ENUMS) | dict(_GENERATED[version].ENUMS)
    for name, rows in extra.MESSAGES[version].items():
        if name in messages:
            raise AssertionError(f"vertex_schema_extra redefines {version} {name}")
        messages[name] = rows
    for name, rows in extra.FIELDS[version].items():
        known = {row[0] for row in messages[name]}
        clash = known & {row[0] for row in rows}
        if clash:  # the protos caught up: drop the hand-kept rows
            raise AssertionError(f"vertex_schema_extra repeats {version} {name}: {clash}")
        messages[name] = messages[name] + rows
    enums.update(extra.ENUMS[version])
    messages = {name: tuple(_relax(name, row) for row in rows)
                for name, rows in messages.items()}
    return messages, enums


def _relax(message: str, row: Row) -> Row:
    if (message, row[0]) not in extra.NOT_REQUIRED:
        return row
    flags = " ".join(w for w in row[4].split() if w != "required")
    return (*row[:4], flags)


def _union() -> tuple[dict[str, tuple[Row, ...]], dict[str, tuple[tuple[str, int], ...]]]:
    messages, enums = _rows("v1beta1")
    more_messages, more_enums = _rows("v1")
    for name, rows in more_messages.items():
        have = {row[0] for row in messages.get(name, ())}
        messages[name] = messages.get(name, ()) + tuple(r for r in rows if r[0] not in have)
    for name, values in more_enums.items():
        have_values = {v[0] for v in enums.get(name, ())}
        enums[name] = enums.get(name, ()) + tuple(v for v in values if v[0] not in have_values)
    return messages, enums


@cache
def schema(version: str | None) -> Schema:
    """The schema of "v1", "v1beta1", or None for the union of both."""
    if version is None:
        return Schema(None, *_union())
    if version not in API_VERSIONS:
        raise ValueError(f"unknown API version {version!r}")
    return Schema(version, *_rows(version))
