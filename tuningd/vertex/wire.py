"""The Vertex wire facade: the TuningJob codec, create validation, resource names, paging,
error envelopes and list filters under one name (`from tuningd.vertex import wire`).

The codec lives in codec (schema: schema), JSON and timestamp primitives in wire_json, create
validation per tuning kind in validation, list filters in listfilter (all in this package); this
module re-exports them and keeps the base-model catalog, the source-model check, resource names,
query helpers, page tokens and the error envelope. The canonical form of a TuningJob is described
in codec.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from tuningd.core.errors import InvalidArgument, TuningdError
from tuningd.vertex.codec import parse_int, parse_tuning_job, render_tuning_job, strip_output_only
from tuningd.vertex.listfilter import (
    JOB_STATE_NUMBERS,
    MAX_FILTER_DEPTH,
    ListFilter,
    compile_filter,
    parse_list_filter,
)

# The base-model catalog lives in models (configurable); re-exported for wire's users.
from tuningd.vertex.models import DEFAULT_CATALOG, ModelCatalog, ModelInfo
from tuningd.vertex.schema import API_VERSIONS, schema
from tuningd.vertex.validation import (
    KINDS,
    MAX_DISPLAY_NAME_LENGTH,
    MAX_EPOCH_COUNT,
    MAX_LABELS,
    RESERVED_LABEL_PREFIX,
    tuning_kind,
    validate_job,
)
from tuningd.vertex.wire_json import (
    MAX_JSON_DEPTH,
    format_timestamp,
    json_kind,
    parse_json_body,
    parse_timestamp,
)

__all__ = [
    "ADAPTER_SIZE_NUMBERS",
    "API_VERSIONS",
    "DEFAULT_CATALOG",
    "INVALID_LOCATION_DESCRIPTION",
    "INVALID_PROJECT_MESSAGE",
    "JOB_STATE_NUMBERS",
    "KINDS",
    "LOCATION_PATTERN",
    "MAX_DISPLAY_NAME_LENGTH",
    "MAX_EPOCH_COUNT",
    "MAX_FILTER_DEPTH",
    "MAX_JSON_DEPTH",
    "MAX_LABELS",
    "OUTPUT_ONLY_FIELDS",
    "PROJECT_PATTERN",
    "RESERVED_LABEL_PREFIX",
    "TUNING_JOB_STATE_NUMBERS",
    "TUNING_MODE_NUMBERS",
    "V1BETA1_ONLY_FIELDS",
    "ListFilter",
    "ModelCatalog",
    "ModelInfo",
    "base_model_id",
    "check_parent",
    "compile_filter",
    "decode_page_token",
    "encode_page_token",
    "error_envelope",
    "format_timestamp",
    "parse_empty_request",
    "parse_json_body",
    "parse_list_filter",
    "parse_page_size",
    "parse_timestamp",
    "parse_tuning_job",
    "render_tuning_job",
    "strip_output_only",
    "tuning_kind",
    "validate_create",
    "wants_int_enums",
]

_BETA = schema("v1beta1")
# AdapterSize wire numbers are not in order (spec §3).
ADAPTER_SIZE_NUMBERS: Mapping[str, int] = dict(
    _BETA.enums["SupervisedHyperParameters.AdapterSize"].numbers)
TUNING_MODE_NUMBERS: Mapping[str, int] = dict(
    _BETA.enums["SupervisedTuningSpec.TuningMode"].numbers)
TUNING_JOB_STATE_NUMBERS: Mapping[str, int] = dict(
    _BETA.enums["TuningJob.TuningJobState"].numbers)


def _top_level(pred: Any) -> tuple[str, ...]:
    return tuple(f.json for f in schema(None).root.fields if pred(f))


# Top-level camelCase names (informational; the codec walks the schema itself).
V1BETA1_ONLY_FIELDS: tuple[str, ...] = _top_level(
    lambda f: f.json not in schema("v1").root.lookup)
OUTPUT_ONLY_FIELDS: tuple[str, ...] = _top_level(lambda f: f.output)


# --------------------------------------------------------------------------------------------
# Create-time validation

_TUNED_MODEL_RE = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/models/[^/\s]+")
_PUBLISHER_PREFIX_RE = re.compile(
    r"(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/")


def base_model_id(name: str) -> str:
    """The bare model id of a base model given as an id or a publisher model resource name."""
    return _PUBLISHER_PREFIX_RE.sub("", name, count=1)


def validate_create(job: Mapping[str, Any], catalog: ModelCatalog | None = None, *,
                    api_version: str | None = None) -> None:
    """Vertex's create-time checks on a canonical TuningJob; raises InvalidArgument with a
    Vertex-like message: exactly one source model (baseModel, in the catalog, or preTunedModel
    with a model resource name), then validation.validate_job: exactly one tuning spec
    and its kind's rules (datasets, hyperparameters, the adapter size the base model allows),
    customBaseModel and outputUri, display name, labels, and every REQUIRED field and oneof of
    the messages set."""
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
    validate_job(job, adapter_sizes=None if info is None else info.adapter_sizes,
                 api_version=api_version)

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
    n = parse_int(value.strip(), (-(2**31), 2**31 - 1))
    if n is None:
        raise InvalidArgument(f"Invalid value at 'page_size' (TYPE_INT32), {json.dumps(value)}")
    if n < 0:
        raise InvalidArgument(f"Invalid page_size: {n}. It must not be negative.")
    if n == 0:
        return default
    return min(n, maximum)


def parse_empty_request(body: Any, *, ignore_unknown: bool = False,
                        root: str = "cancel_tuning_job_request") -> None:
    """Check the JSON body of a request message without body fields (CancelTuningJobRequest):
    an object, with unknown names refused unless ignore_unknown; raises InvalidArgument."""
    if not isinstance(body, dict):
        raise InvalidArgument(
            f"Invalid JSON payload received. Expected an object at '{root}', "
            f"got {json_kind(body)}.")
    if body and not ignore_unknown:
        key = next(iter(body))
        raise InvalidArgument(
            f'Invalid JSON payload received. Unknown name "{str(key)[:200]}" at \'{root}\': '
            "Cannot find field.")


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
