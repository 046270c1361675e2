"""The OpenAPI 3.0 description of tuningd's control API (served at /openapi.json)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuningd import __version__
from tuningd.core.model import LocalState
from tuningd.http.openapi_common import ALWAYS_POSSIBLE
from tuningd.http.openapi_common import STRING as _STRING
from tuningd.http.openapi_common import error_responses as _error_responses
from tuningd.http.openapi_common import json_schema_response as _json_response
from tuningd.http.openapi_common import param as _param
from tuningd.http.openapi_common import ref as _ref
from tuningd.http.passthrough import openapi_paths as passthrough_openapi_paths
from tuningd.http.status import STATUS_SCHEMAS
from tuningd.vertex import wire
from tuningd.vertex.schema import schema

_PATH_PARAMS = [
    _param("project", "path",
           "Project id (6-30 of a-z, 0-9, -), project number, or legacy domain-scoped id "
           "(example.com:my-project); kept as given. Anything else: 400 INVALID_ARGUMENT.",
           {"type": "string", "pattern": f"^(?:{wire.PROJECT_PATTERN})$"}),
    _param("location", "path",
           "Region-like location id, e.g. us-central1, europe-west4, global, us, eu. "
           "Anything else: 400 INVALID_ARGUMENT.",
           {"type": "string", "pattern": f"^{wire.LOCATION_PATTERN}$"}),
]
_ID_PARAM = _param("id", "path", "tuningd job id (the last segment of `name`).",
                   {"type": "string", "pattern": "^[^/:]+$"})
_ALT_PARAM = _param("$alt", "query",
                    "`json;enum-encoding=int` renders enums as numbers (as GAPIC clients ask).",
                    _STRING)
_LIST_PARAMS = [
    _param("filter", "query", "AIP-160 filter on the TuningJob view: state, display_name, "
           "create_time, labels.key, AND/OR/NOT.", _STRING),
    _param("pageSize", "query", "default 50, maximum 100",
           {"type": "integer", "format": "int32", "minimum": 0}),
    _param("pageToken", "query", "nextPageToken of the previous page (same filter)", _STRING),
    _ALT_PARAM,
]


# Create-time rules a schema can say (an empty preTunedModel or a spec without its dataset is
# "unset" to Vertex), so that generated bodies reach the deeper checks.
_DATASET_URI = {"type": "string",
                "pattern": r"^(gs://[a-z0-9]([a-z0-9._-]{0,220}[a-z0-9])?/[^\r\n]+"
                           r"|projects/[^/\s]+/locations/[^/\s]+/datasets/[^/\s]+)$"}
_DATASET_SPEC: dict[str, Any] = {"type": "object", "required": ["trainingDatasetUri"],
                 "properties": {"trainingDatasetUri": _DATASET_URI,
                                "validationDatasetUri": _DATASET_URI}}
_CREATE_FIELDS: dict[str, Any] = {
    "baseModel": {"type": "string", "minLength": 1},
    "preTunedModel": {"type": "object", "required": ["tunedModelName"],
                      "properties": {"tunedModelName": {"type": "string", "minLength": 1},
                                     "checkpointId": {"type": "string"}}},
    "preferenceOptimizationSpec": _DATASET_SPEC,
}
_REQUIRED_DATASET = ("supervisedTuningSpec",)


def _with_dataset(name: str, known: Mapping[str, Any]) -> dict[str, Any]:
    field = dict(known.get(name, {"type": "object"}))
    if name in _REQUIRED_DATASET:
        field["required"] = ["trainingDatasetUri"]
        field["properties"] = {**field["properties"], **_DATASET_SPEC["properties"]}
    return field


def _create_body(version: str, tuning_job: Mapping[str, Any]) -> dict[str, Any]:
    """A create body at one API version: only the fields that version knows (others are 400)."""
    fields = [f.json for f in schema(version).root.fields if not f.output]
    known = tuning_job["properties"]
    return {
        "type": "object",
        "description": "A TuningJob to queue: exactly one of baseModel (a tunable model, "
                       "e.g. gemini-2.5-flash) or preTunedModel, and exactly one tuning spec "
                       f"that {version} defines, with its dataset (gs://bucket/object or a "
                       "Vertex dataset resource name). Other field names answer 400 as on "
                       "Vertex, except snake_case spellings of these (read alike) and the "
                       "output-only fields of a fetched job (ignored). Vertex's other checks "
                       "(label syntax, epochCount 1-100, adapter size of a known model, ...) "
                       "answer 400 INVALID_ARGUMENT; a base model missing from [models] is "
                       "sent to Vertex (models.unknown = \"forward\") or refused "
                       "(\"refuse\"). The body reaches Vertex at this path's version.",
        "properties": {name: _CREATE_FIELDS.get(name) or _with_dataset(name, known)
                       for name in fields},
        "additionalProperties": False,
        "allOf": [
            {"oneOf": [{"required": ["baseModel"]}, {"required": ["preTunedModel"]}]},
            {"oneOf": [{"required": [kind]} for kind in wire.KINDS if kind in fields]},
        ],
    }


def _schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    int64 = {"type": "string", "pattern": "^-?[0-9]+$",
             "description": "int64 (string on output; a number is accepted on input)"}
    enum_or_int = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    status = {
        "type": "object",
        "description": "google.rpc.Status; `code` is the gRPC canonical code (1 = CANCELLED).",
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                       "details": {"type": "array", "items": {"type": "object"}}},
    }
    tuning_job: dict[str, Any] = {
            "type": "object",
            "description": "Vertex AI TuningJob (proto3 JSON; snake_case names, enum numbers and "
                           "int64 numbers are accepted on input). Output-only fields sent on "
                           "create are ignored.",
            "additionalProperties": True,
            "properties": {
                "name": {"type": "string", "readOnly": True,
                         "description": "projects/{project}/locations/{location}/tuningJobs/{id}"},
                "baseModel": {"type": "string"},
                "preTunedModel": {"type": "object"},
                "supervisedTuningSpec": {
                    "type": "object",
                    "properties": {
                        "trainingDatasetUri": {"type": "string"},
                        "validationDatasetUri": {"type": "string"},
                        "hyperParameters": {
                            "type": "object",
                            "properties": {"epochCount": int64,
                                           "learningRateMultiplier": {"type": "number"},
                                           "adapterSize": enum_or_int},
                        },
                        "exportLastCheckpointOnly": {"type": "boolean"},
                    },
                },
                **{kind: {"type": "object",
                          "description": "one tuning kind's spec; exactly one is set"}
                   for kind in wire.KINDS if kind != "supervisedTuningSpec"},
                "customBaseModel": {"type": "string", "description": "v1beta1: gs:// URI of "
                                    "an open model's weights (with baseModel)"},
                "outputUri": {"type": "string", "description": "v1beta1: gs:// directory"},
                "evaluationConfig": {"type": "object"},
                "tunedModelDisplayName": {"type": "string", "maxLength": 128},
                "description": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "keys starting with `tuningd-` are reserved for "
                                          "tuningd"},
                "encryptionSpec": {"type": "object",
                                   "properties": {"kmsKeyName": {"type": "string"}}},
                "serviceAccount": {"type": "string"},
                "state": {**enum_or_int, "readOnly": True,
                          "description": "JobState; queued jobs show JOB_STATE_QUEUED"},
                "createTime": {**timestamp, "readOnly": True},
                "updateTime": {**timestamp, "readOnly": True},
                "startTime": {**timestamp, "readOnly": True},
                "endTime": {**timestamp, "readOnly": True},
                "error": {**status, "readOnly": True},
                "experiment": {"type": "string", "readOnly": True},
                "tunedModel": {"type": "object", "readOnly": True},
                "tuningDataStats": {"type": "object", "readOnly": True},
                "tuningJobState": {**enum_or_int, "readOnly": True,
                                   "description": "v1beta1 only"},
                "tuningJobMetadata": {"type": "object", "readOnly": True,
                                      "description": "v1beta1 only"},
                "tuningd": {**_ref("TuningdExtension"), "readOnly": True},
            },
        }
    return {
        "TuningJob": tuning_job,
        "TuningdExtension": {
            "type": "object",
            "description": "tuningd-only details (clients of Vertex ignore unknown fields).",
            "required": ["state", "priority", "attempts", "cancelRequested"],
            "properties": {
                "state": {"type": "string", "enum": [s.value for s in LocalState]},
                "priority": {"type": "integer"},
                "attempts": {"type": "integer"},
                "cancelRequested": {"type": "boolean"},
                "remoteName": {"type": "string"},
                "remoteState": {"type": "string"},
                "remoteSubstate": {"type": "string"},
                "queuePosition": {"type": "integer", "minimum": 1,
                                  "description": "1-based, only while queued"},
                "requestId": {"type": "string"},
                "outcome": {"type": "string"},
                "apiVersion": {"type": "string", "enum": list(wire.API_VERSIONS),
                               "description": "the version the create came in on: the job "
                                              "is created and read on Vertex at it"},
                "history": {"type": "array", "items": _ref("HistoryEntry"),
                            "description": "only on single-job GETs"},
                "createsPaused": {
                    "type": "object",
                    "description": "only while queued and creates to the job's project and "
                                   "location are paused after a project-wide error (401, 403, "
                                   "404, FAILED_PRECONDITION on create); one probe create is "
                                   "tried at nextProbeTime",
                    "required": ["status", "message", "since", "nextProbeTime"],
                    "properties": {"status": {"type": "string"}, "message": {"type": "string"},
                                   "since": timestamp, "nextProbeTime": timestamp},
                },
                "lastError": {
                    "type": "object",
                    "description": "the last error tuningd met for this job (a refused or "
                                   "failed create, a throttle, a failed poll...), kept with "
                                   "its time after later success; absent once the job "
                                   "succeeded",
                    "required": ["code", "status", "message", "time"],
                    "properties": {
                        "code": {"type": "integer", "description": "google.rpc.Code number"},
                        "status": {"type": "string",
                                   "description": "google.rpc.Code name, e.g. UNAUTHENTICATED"},
                        "message": {"type": "string"}, "time": timestamp},
                },
                "nextAttemptTime": {
                    **timestamp,
                    "description": "when tuningd next acts on the job (a retry, a reconcile, "
                                   "a poll, the probe of paused creates); absent for an ended "
                                   "job and for one that waits only for capacity or is acted "
                                   "on now"},
            },
        },
        "HistoryEntry": {
            "type": "object",
            "required": ["time", "from", "to", "reason"],
            "properties": {"time": timestamp, "from": {"type": "string", "nullable": True},
                           "to": {"type": "string"}, "reason": {"type": "string"},
                           "detail": {"type": "object"}},
        },
        **STATUS_SCHEMAS,
        **{f"CreateTuningJobBody.{version}": _create_body(version, tuning_job)
           for version in wire.API_VERSIONS},
        "ListTuningJobsResponse": {
            "type": "object",
            "description": "Empty object when nothing matches.",
            "properties": {"tuningJobs": {"type": "array", "items": _ref("TuningJob")},
                           "nextPageToken": {"type": "string"}},
        },
        "Empty": {"type": "object", "description": "google.protobuf.Empty"},
        "ErrorEnvelope": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message", "status"],
                "properties": {"code": {"type": "integer", "description": "HTTP status"},
                               "message": {"type": "string"},
                               "status": {"type": "string", "example": "INVALID_ARGUMENT"},
                               "details": {"type": "array", "items": {"type": "object"}}},
            }},
        },
        "Health": {"type": "object", "properties": {"status": {"type": "string",
                                                              "enum": ["ok"]}}},
        "Readiness": {"type": "object",
                      "properties": {"status": {"type": "string", "enum": ["ready"]},
                                     "checks": {"type": "object",
                                                "additionalProperties": {"type": "string"}},
                                     "instance": _ref("Instance")}},
        "NotReady": {"type": "object", "required": ["error", "status", "reasons", "checks"],
                     "description": "Google's error envelope, and every reason tuningd is "
                                    "not ready (engine starting or draining, store not "
                                    "writable, ...); `checks` holds \"ok\" or the reason "
                                    "for each check",
                     "properties": {
                         "error": {"type": "object", "description": "as in ErrorEnvelope",
                                   "required": ["code", "message", "status"]},
                         "status": {"type": "string", "enum": ["not_ready"]},
                         "reasons": {"type": "array", "items": {
                             "type": "object", "required": ["check", "reason"],
                             "properties": {"check": _STRING, "reason": _STRING}}},
                         "checks": {"type": "object",
                                    "additionalProperties": {"type": "string"}},
                         "instance": _ref("Instance")}},
        "Instance": {"type": "object", "description": "Several instances on one store: this "
                     "one's role (leader runs the engine) and who holds the lease.",
                     "properties": {"role": {"type": "string", "enum": ["leader", "standby"]},
                                    "instance_id": _STRING,
                                    "epoch": {"type": "integer", "nullable": True},
                                    "leader": {"type": "string", "nullable": True},
                                    "leader_epoch": {"type": "integer", "nullable": True}}},
    }


_CREATE_EXAMPLE = {
    "baseModel": "gemini-2.5-flash",
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/train.jsonl",
                             "hyperParameters": {"epochCount": "3"}},
    "tunedModelDisplayName": "support-bot",
}

# Vertex's answers pass through as they came, so a pass-through route may answer any status.
_VERTEX_ANSWER = {"description": "any other status: Vertex's own answer, status, Content-Type "
                                 "and body as Vertex sent them",
                  "content": {"*/*": {"schema": {}}}}

# The job id is the last segment of the job's `name`. `#regex:` after a JSON pointer is
# schemathesis's extractor syntax (it lets its stateful phase follow a create to the job);
# other tools read the whole expression as one JSON pointer that names nothing.
_ID_FROM_NAME = "$response.body#/name#regex:/tuningJobs/([^/]+)$"


def _job_links(version: str, *, from_body: bool) -> dict[str, Any]:
    """OpenAPI links from an answer about one job to the operations on that job."""
    params = {"project": "$request.path.project", "location": "$request.path.location",
              "id": _ID_FROM_NAME if from_body else "$request.path.id"}
    return {
        "GetJob": {"operationId": f"{version}.tuningJobs.get", "parameters": params,
                   "description": "the job just answered about"},
        "CancelJob": {"operationId": f"{version}.tuningJobs.cancel", "parameters": params,
                      "description": "cancel the job just answered about"},
        "LookupJob": {"operationId": "tuningd.lookupJob", "parameters": {"id": params["id"]},
                      "description": "the same job by its local id alone"},
    }


def openapi_document(*, with_metrics: bool, with_token: bool,
                     with_passthrough: bool = False) -> dict[str, Any]:
    """An OpenAPI 3.0 description of exactly the routes make_api_app registers."""
    auth_errors = (401,) if with_token else ()
    paths: dict[str, Any] = {
        "/healthz": {"get": {
            "summary": "Liveness: the event loop answers.", "operationId": "healthz",
            "security": [],
            "responses": {"200": _json_response("alive", _ref("Health")),
                          **_error_responses()},
        }},
        "/readyz": {"get": {
            "summary": "Readiness: engine started, store writable, credentials usable.",
            "operationId": "readyz", "security": [],
            "responses": {"200": _json_response("ready", _ref("Readiness")),
                          **_error_responses(),
                          "503": _json_response("not ready, with every reason",
                                                _ref("NotReady"))},
        }},
        "/openapi.json": {"get": {
            "summary": "This document.", "operationId": "openapi",
            "responses": {"200": _json_response("OpenAPI 3.0 document", {"type": "object"}),
                          **_error_responses(*auth_errors)},
        }},
        "/": {"get": {
            "summary": "The status page (HTML shell; its script asks for the API token and "
                       "fetches /v1/tuningd/status.html with it).",
            "operationId": "statusPage", "security": [],
            "responses": {"200": {"description": "the page",
                                  "content": {"text/html": {"schema": _STRING}}},
                          **_error_responses()},
        }},
        "/v1/tuningd/status": {"get": {
            "summary": "tuningd extension: this instance at a glance (`tuningd status`).",
            "operationId": "tuningd.status",
            "responses": {"200": _json_response("the status", _ref("TuningdStatus")),
                          **_error_responses(*auth_errors)},
        }},
        "/v1/tuningd/status.html": {"get": {
            "summary": "tuningd extension: the status as an HTML fragment (the page inserts "
                       "it).",
            "operationId": "tuningd.statusFragment",
            "responses": {"200": {"description": "the fragment",
                                  "content": {"text/html": {"schema": _STRING}}},
                          **_error_responses(*auth_errors)},
        }},
        "/v1/tuningd/jobs/{id}": {"get": {
            "summary": "tuningd extension: a job by local id or a unique prefix of one (4+ "
                       "characters; ambiguous: 400 naming the matches), with its history.",
            "operationId": "tuningd.lookupJob", "parameters": [_ID_PARAM, _ALT_PARAM],
            "responses": {"200": _json_response("the job", _ref("TuningJob")),
                          **_error_responses(400, *auth_errors, 403, 404, 503)},
        }},
        "/v1/tuningd/jobs": {"get": {
            "summary": "tuningd extension: the jobs of every project and location, newest "
                       "first.", "operationId": "tuningd.listJobs", "parameters": _LIST_PARAMS,
            "responses": {"200": _json_response("one page", _ref("ListTuningJobsResponse")),
                          **_error_responses(400, *auth_errors, 503)},
        }},
    }
    if with_metrics:
        paths["/metrics"] = {"get": {
            "summary": "Prometheus metrics (text or OpenMetrics by Accept).",
            "operationId": "metrics", "security": [],
            "responses": {"200": {"description": "metrics",
                                  "content": {"text/plain": {"schema": _STRING},
                                              "application/openmetrics-text": {
                                                  "schema": _STRING}}},
                          **_error_responses()},
        }}
    for version in wire.API_VERSIONS:
        base = f"/{version}/projects/{{project}}/locations/{{location}}/tuningJobs"
        paths[base] = {
            "post": {
                "summary": "Queue a tuning job (Vertex create; answers the job, not an LRO).",
                "operationId": f"{version}.tuningJobs.create",
                "parameters": [
                    *_PATH_PARAMS,
                    _param("requestId", "query",
                           "Idempotency key: 1-64 of [A-Za-z0-9_-] (a UUID fits); a repeat "
                           "returns the job first created with it.",
                           {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}),
                    _param("priority", "query", "int32; higher is submitted first (default 0).",
                           {"type": "integer", "format": "int32"}),
                    _ALT_PARAM,
                ],
                "requestBody": {"required": True,
                                "content": {"application/json": {
                                    "schema": _ref(f"CreateTuningJobBody.{version}"),
                                    "example": _CREATE_EXAMPLE}}},
                "responses": {"200": {**_json_response("the queued job", _ref("TuningJob")),
                                      "links": _job_links(version, from_body=True)},
                              **_error_responses(400, *auth_errors, 403, 409, 413, 503)},
            },
            "get": {
                "summary": "List jobs, newest first.",
                "operationId": f"{version}.tuningJobs.list",
                "parameters": [*_PATH_PARAMS, *_LIST_PARAMS],
                "responses": {"200": _json_response("one page", _ref("ListTuningJobsResponse")),
                              **_error_responses(400, *auth_errors, 403, 503)},
            },
        }
        paths[base + "/{id}"] = {"get": {
            "summary": "Get a job (with tuningd.history).",
            "operationId": f"{version}.tuningJobs.get",
            "parameters": [*_PATH_PARAMS, _ID_PARAM, _ALT_PARAM],
            "responses": {"200": {**_json_response("the job", _ref("TuningJob")),
                                  "links": _job_links(version, from_body=False)},
                          **_error_responses(400, *auth_errors, 403, 404, 503)},
        }}
        paths[base + "/{id}:cancel"] = {"post": {
            "summary": "Cancel a job: queued ones at once, submitted ones best effort on Vertex.",
            "operationId": f"{version}.tuningJobs.cancel",
            "parameters": [*_PATH_PARAMS, _ID_PARAM],
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": _ref("Empty")}}},
            "responses": {"200": {**_json_response("cancel accepted", _ref("Empty")),
                                  "links": _job_links(version, from_body=False)},
                          **_error_responses(400, *auth_errors, 403, 404, 413, 503)},
        }}
    if with_passthrough:
        forwarded = passthrough_openapi_paths(_PATH_PARAMS,
                                              (*ALWAYS_POSSIBLE, *auth_errors, 403, 404, 413,
                                               503, 504))
        for item in forwarded.values():
            for operation in item.values():
                operation["responses"]["default"] = _VERTEX_ANSWER
        paths.update(forwarded)
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "tuningd control API", "version": __version__,
                 "description": "Vertex AI tuningJobs wire format (v1 and v1beta1) served by "
                                "tuningd, plus tuningd extensions. Every error uses Google's "
                                "envelope. Unknown paths, and methods a known path does not "
                                "serve, answer 404 NOT_FOUND in the same envelope (Google "
                                "says \"Method not found.\" for the latter)."},
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    if with_token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
