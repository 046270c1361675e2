"""Generate tuningd/vertex/schema_*.py from the installed google-cloud-aiplatform proto types.

    python -m tests.tools.gen_vertex_schema            # rewrite the committed modules
    python -m tests.tools.gen_vertex_schema --check    # exit 1 when they are stale

It walks `TuningJob` of `google.cloud.aiplatform_v1.types` and `..._v1beta1.types` (the proto-plus
classes and their descriptors) and every message and enum it reaches. Proto-plus drops the
`google.api.field_behavior` options from its descriptors, so OUTPUT_ONLY and REQUIRED are read
from each class's documented attributes ("Output only. ...", "Required. ..."), which the GAPIC
generator writes from those same options. Messages and enums that are the same in both versions go
to schema_common.py, the rest to schema_v1.py / schema_v1beta1.py.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

VERSIONS = ("v1", "v1beta1")
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "tuningd" / "vertex"
ROOT = "TuningJob"
MAX_LINE = 100

# Well-known types have their own JSON forms (proto3 JSON mapping); they are kinds, not messages.
WELL_KNOWN = {
    "google.protobuf.Timestamp": "timestamp",
    "google.protobuf.Duration": "duration",
    "google.protobuf.Struct": "struct",
    "google.protobuf.Value": "value",
    "google.protobuf.ListValue": "listvalue",
    "google.protobuf.Any": "any",
}
SCALARS = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes", FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_SINT64: "int64", FieldDescriptor.TYPE_SFIXED64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64", FieldDescriptor.TYPE_FIXED64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_SINT32: "int32",
    FieldDescriptor.TYPE_SFIXED32: "int32", FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_FIXED32: "uint32",
}

Row = tuple[str, str, str, str, str]  # proto name, JSON name, kind, type name, flags
Messages = dict[str, tuple[Row, ...]]
Enums = dict[str, tuple[tuple[str, int], ...]]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _short(full_name: str, version: str) -> str:
    prefix = f"google.cloud.aiplatform.{version}."
    return full_name[len(prefix):] if full_name.startswith(prefix) else full_name


def _proto_name(field: FieldDescriptor) -> str:
    # proto-plus renames fields that clash with Python names (type -> type_); the JSON name
    # still comes from the real proto name.
    name: str = field.name
    if name.endswith("_") and _camel(name[:-1]) == field.json_name:
        return name[:-1]
    return name


_ATTR_RE = re.compile(r"^ {8}(\w+) \(.*\):\s*$")


def _attribute_docs(cls: Any) -> dict[str, str]:
    """python attribute name -> its documented description (first paragraph, one line)."""
    doc = getattr(cls, "__doc__", None) or ""
    out: dict[str, str] = {}
    current: str | None = None
    in_attrs = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            continue
        match = _ATTR_RE.match(line)
        if match:
            current = match[1]
            out[current] = ""
        elif current is not None and line.startswith(" " * 12) and (out[current]
                                                                    or line.strip()):
                out[current] += " " + line.strip()
    return {k: v.strip() for k, v in out.items()}


def _class_for(types_module: Any, short_name: str) -> Any:
    obj: Any = types_module
    for part in short_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _is_real_oneof(field: FieldDescriptor) -> bool:
    oneof = field.containing_oneof
    if oneof is None:
        return False
    # proto3 `optional` puts a field alone in a synthetic oneof named "_<field>".
    return not (len(oneof.fields) == 1 and oneof.name == f"_{field.name}")


def _flags(field: FieldDescriptor, doc: str, *, is_map: bool) -> str:
    flags: list[str] = []
    if is_map:
        flags.append("map")
    elif field.is_repeated:
        flags.append("repeated")
    if doc.startswith(("Output only", "Identifier. Output only")):
        flags.append("output")
    if doc.startswith("Required"):
        flags.append("required")
    if _is_real_oneof(field):
        flags.append(f"oneof={field.containing_oneof.name}")
    elif field.has_presence and field.message_type is None and not field.is_repeated:
        flags.append("optional")  # proto3 `optional`: an explicit default value is kept
    return " ".join(flags)


def _type_of(field: FieldDescriptor, version: str) -> tuple[str, str]:
    if field.enum_type is not None:
        return "enum", _short(field.enum_type.full_name, version)
    if field.message_type is not None:
        full = field.message_type.full_name
        if full in WELL_KNOWN:
            return WELL_KNOWN[full], ""
        return "message", _short(full, version)
    return SCALARS[field.type], ""


def collect(version: str) -> tuple[Messages, Enums]:
    """Every message and enum reachable from TuningJob at one API version."""
    types_module = importlib.import_module(f"google.cloud.aiplatform_{version}.types")
    root: Descriptor = types_module.TuningJob.pb().DESCRIPTOR
    messages: Messages = {}
    enums: Enums = {}
    stack = [root]
    while stack:
        desc = stack.pop()
        name = _short(desc.full_name, version)
        if name in messages:
            continue
        docs = _attribute_docs(_class_for(types_module, name))
        rows: list[Row] = []
        for field in desc.fields:
            target = field.message_type
            is_map = bool(target is not None and target.GetOptions().map_entry)
            field_for_type = target.fields_by_name["value"] if is_map else field
            kind, type_name = _type_of(field_for_type, version)
            sub = field_for_type.message_type
            if kind == "message" and sub is not None:
                stack.append(sub)
            enum: EnumDescriptor | None = field_for_type.enum_type
            if enum is not None:
                enums[_short(enum.full_name, version)] = tuple(
                    (v.name, v.number) for v in enum.values)
            rows.append((_proto_name(field), field.json_name, kind, type_name,
                         _flags(field, docs.get(field.name, ""), is_map=is_map)))
        messages[name] = tuple(rows)
    return messages, enums


# --------------------------------------------------------------------------- rendering

HEADER = '''"""{doc}

GENERATED by `python -m tests.tools.gen_vertex_schema` from google-cloud-aiplatform {aip_version}
(google.cloud.aiplatform_{v1,v1beta1}.types). Do not edit by hand: hand-kept additions live in
tuningd/vertex/schema_extra.py. tuningd/vertex/schema.py explains the row format.
"""

from __future__ import annotations
'''


def _sorted_names(names: Any) -> list[str]:
    return sorted(names, key=lambda n: (n != ROOT, n))


def _row_lines(row: Row) -> Iterator[str]:
    one_line = f"        {row!r},"
    if len(one_line) <= MAX_LINE:
        yield one_line
        return
    yield f"        ({row[0]!r}, {row[1]!r},"
    yield f"         {row[2]!r}, {row[3]!r},"
    yield f"         {row[4]!r}),"


def _render_messages(var: str, messages: Messages) -> Iterator[str]:
    yield f"{var}: dict[str, tuple[tuple[str, str, str, str, str], ...]] = {{"
    for name in _sorted_names(messages):
        yield f"    {name!r}: ("
        for row in messages[name]:
            yield from _row_lines(row)
        yield "    ),"
    yield "}"


def _render_enums(var: str, enums: Enums) -> Iterator[str]:
    yield f"{var}: dict[str, tuple[tuple[str, int], ...]] = {{"
    for name in sorted(enums):
        yield f"    {name!r}: ("
        for value in enums[name]:
            yield f"        {value!r},"
        yield "    ),"
    yield "}"


def render() -> dict[str, str]:
    """File name -> text of every generated module."""
    from google.cloud.aiplatform import version as aip_version

    per_version = {v: collect(v) for v in VERSIONS}
    (m1, e1), (m2, e2) = per_version["v1"], per_version["v1beta1"]
    common_m = {k: v for k, v in m1.items() if m2.get(k) == v}
    common_e = {k: v for k, v in e1.items() if e2.get(k) == v}
    files: dict[str, str] = {}
    header = HEADER.replace("{aip_version}", aip_version.__version__)
    shared_doc = "Vertex TuningJob schema data: the messages and enums v1 and v1beta1 share."
    lines = [header.replace("{doc}", shared_doc),
             *_render_messages("MESSAGES", common_m), "", "", *_render_enums("ENUMS", common_e)]
    files["schema_common.py"] = "\n".join(lines) + "\n"
    for version in VERSIONS:
        msgs, enums = per_version[version]
        only_m = {k: v for k, v in msgs.items() if k not in common_m}
        only_e = {k: v for k, v in enums.items() if k not in common_e}
        doc = f"Vertex TuningJob schema data: what only {version} has (or has otherwise)."
        lines = [header.replace("{doc}", doc),
                 *_render_messages("MESSAGES", only_m), "", "", *_render_enums("ENUMS", only_e)]
        files[f"schema_{version}.py"] = "\n".join(lines) + "\n"
    return files


def stale_files(files: dict[str, str] | None = None) -> list[str]:
    """Names of committed modules whose text differs from a fresh generation."""
    files = files if files is not None else render()
    stale = []
    for name, text in files.items():
        path = PACKAGE_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the modules are stale")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = stale_files(files)
        for name in stale:
            print(f"stale: tuningd/vertex/{name}", file=sys.stderr)
        return 1 if stale else 0
    for name, text in files.items():
        (PACKAGE_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote tuningd/vertex/{name} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
