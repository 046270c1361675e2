"""The emulator's Vertex routes beside tuningJobs CRUD that the SDKs call: tuned models and
endpoints, `:rebaseTunedModel` with its long-running operations, the tuning jobs' `operations`,
and the v1beta1 `:optimizePrompt` and `:validateReinforcementTuningReward`."""

from __future__ import annotations

import copy
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tuningd.core.errors import Code, FailedPrecondition, InvalidArgument, NotFound
from tuningd.emulator.genai_tools import optimize_prompt, validate_reward
from tuningd.emulator.state import EmulatedJob, EmulatorState
from tuningd.vertex import wire

StateHandler = Callable[[web.Request, EmulatorState], Awaitable[Any]]
# server._api_call: auth, rate limits, latency, counting and logging around a handler.
ApiCall = Callable[[web.Request, str, StateHandler], Awaitable[web.StreamResponse]]

_PARENT = "/projects/{project:[^/]*}/locations/{location:[^/]*}"
_METHOD_NOT_FOUND = "Method not found."
_SUCCEEDED = "JOB_STATE_SUCCEEDED"
_METADATA_TYPE = "RebaseTunedModelOperationMetadata"


@dataclass
class EmulatedOperation:
    """A long-running operation of a tuning job (today: the rebase that created it)."""

    op_id: str
    job_id: str
    location: str
    create_s: float
    cancelled_s: float | None = None


@dataclass
class Operations:
    """Every operation the emulator started, by id; ids are seeded like job ids."""

    seed: int | None
    by_id: dict[str, EmulatedOperation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(None if self.seed is None else f"operations-{self.seed}")

    def start(self, job: EmulatedJob, now_s: float) -> EmulatedOperation:
        while True:
            op_id = str(self._rng.randrange(10**18, 10**19))
            if op_id not in self.by_id:
                break
        op = EmulatedOperation(op_id, job.job_id, job.location, now_s)
        self.by_id[op_id] = op
        return op


OPERATIONS_KEY = web.AppKey("emulator_operations", Operations)


def add_routes(app: web.Application, api_call: ApiCall, *, seed: int | None) -> None:
    """Register the routes (before the emulator's catch-all collection and unknown routes)."""
    app[OPERATIONS_KEY] = Operations(seed)
    routes = _Routes(api_call)
    router = app.router
    base = "/{version}" + _PARENT
    ops = base + "/tuningJobs/{job:[^/:]+}/operations"
    router.add_route("*", ops, routes.operations)
    router.add_route("*", ops + "/{operation}", routes.operation)
    router.add_route("*", base + "/models/{model}", routes.model)
    router.add_route("*", base + "/endpoints/{endpoint}", routes.endpoint)
    for verb in ("rebaseTunedModel", "optimizePrompt", "validateReinforcementTuningReward"):
        router.add_route("*", f"{base}/tuningJobs:{verb}", routes.tool(verb))


class _Routes:
    """Method dispatch per path; every call goes through the emulator's api_call."""

    def __init__(self, api_call: ApiCall) -> None:
        self._api_call = api_call

    async def _refuse(self, request: web.Request) -> web.StreamResponse:
        return await self._api_call(request, "other", _method_not_found)

    async def operations(self, request: web.Request) -> web.StreamResponse:
        _ui_as_v1beta1(request)
        if request.method == "GET":
            return await self._api_call(request, "operations", _list_operations)
        return await self._refuse(request)

    async def operation(self, request: web.Request) -> web.StreamResponse:
        _ui_as_v1beta1(request)
        _, _, verb = request.match_info["operation"].partition(":")
        handlers: dict[tuple[str, str], StateHandler] = {
            ("GET", ""): _get_operation, ("DELETE", ""): _delete_operation,
            ("POST", "cancel"): _cancel_operation, ("POST", "wait"): _wait_operation,
        }
        handler = handlers.get((request.method, verb))
        if handler is None:
            return await self._refuse(request)
        return await self._api_call(request, "operations", handler)

    async def model(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return await self._refuse(request)
        return await self._api_call(request, "model", _get_model)

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return await self._refuse(request)
        return await self._api_call(request, "endpoint", _get_endpoint)

    def tool(self, verb: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        handler = {"rebaseTunedModel": _rebase, "optimizePrompt": _optimize,
                   "validateReinforcementTuningReward": _validate_reward}[verb]
        beta_only = verb != "rebaseTunedModel"

        async def serve(request: web.Request) -> web.StreamResponse:
            if request.method != "POST" or (
                    beta_only and request.match_info["version"] != "v1beta1"):
                return await self._refuse(request)
            return await self._api_call(request, verb, handler)
        return serve


def _ui_as_v1beta1(request: web.Request) -> None:
    # The v1beta1 GAPIC REST clients poll operations under /ui/ (observed with aiplatform 2.7):
    # that surface answers exactly as v1beta1 does.
    if request.match_info.get("version") == "ui":
        request.match_info["version"] = "v1beta1"


async def _method_not_found(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    raise NotFound(_METHOD_NOT_FOUND)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    return wire.parse_json_body(raw) if raw.strip() else {}


def _prefix(state: EmulatorState, location: str) -> str:
    return f"projects/{state.config.project_number}/locations/{location}"


# --------------------------------------------------------------------------- models, endpoints


def _succeeded(state: EmulatorState, location: str) -> list[tuple[EmulatedJob, dict[str, Any]]]:
    """Succeeded jobs of a location with their views (whose tunedModel names what they made)."""
    state.advance()
    found = []
    for job in sorted(state.jobs.values(), key=lambda j: j.seq):
        if job.location == location:
            view = state.view(job)
            if view.get("state") == _SUCCEEDED and isinstance(view.get("tunedModel"), dict):
                found.append((job, view))
    return found


async def _get_model(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    location = request.match_info["location"]
    model_id, _, version = request.match_info["model"].partition("@")
    name = f"{_prefix(state, location)}/models/{model_id}"
    for _, view in _succeeded(state, location):
        tuned = view["tunedModel"]
        if str(tuned.get("model", "")).partition("@")[0] == name and version in ("", "1"):
            return _model_json(name, view)
    raise NotFound(f"Model {name} not found." if not version
                   else f"Model {name}@{version} not found.")


def _model_json(name: str, view: dict[str, Any]) -> dict[str, Any]:
    tuned = view["tunedModel"]
    ended = view.get("endTime", view["updateTime"])
    model: dict[str, Any] = {
        "name": name, "versionId": "1", "versionAliases": ["default"],
        "versionCreateTime": ended, "versionUpdateTime": ended,
        "displayName": view.get("tunedModelDisplayName") or name.rsplit("/", 1)[-1],
        "createTime": ended, "updateTime": ended,
        "deployedModels": [{"endpoint": tuned["endpoint"],
                            "deployedModelId": _deployed_id(tuned["endpoint"])}],
        "modelSourceInfo": {"sourceType": "GENIE"},
    }
    if view.get("description"):
        model["description"] = view["description"]
    if view.get("labels"):
        model["labels"] = dict(view["labels"])  # labels propagate to the tuned model (spec §8)
    checkpoints = tuned.get("checkpoints") or []
    if checkpoints:
        model["checkpoints"] = [{"checkpointId": c["checkpointId"], "epoch": str(c["epoch"]),
                                 "step": str(c["step"])} for c in checkpoints]
        model["defaultCheckpointId"] = checkpoints[-1]["checkpointId"]
    return model


def _deployed_id(endpoint_name: str) -> str:
    # Stable per endpoint, distinct from the endpoint id, 19 digits like Vertex's.
    digits = endpoint_name.rsplit("/", 1)[-1][::-1].lstrip("0")
    return (digits + "1" * 19)[:19]


async def _get_endpoint(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    location = request.match_info["location"]
    name = f"{_prefix(state, location)}/endpoints/{request.match_info['endpoint']}"
    for _, view in _succeeded(state, location):
        tuned = view["tunedModel"]
        model = str(tuned.get("model", "")).partition("@")[0]
        checkpoint = None
        if tuned.get("endpoint") != name:
            matches = [c for c in tuned.get("checkpoints") or [] if c.get("endpoint") == name]
            if not matches:
                continue
            checkpoint = matches[0]["checkpointId"]
        ended = view.get("endTime", view["updateTime"])
        display = view.get("tunedModelDisplayName") or model.rsplit("/", 1)[-1]
        deployed: dict[str, Any] = {"id": _deployed_id(name), "model": model,
                                    "modelVersionId": "1", "displayName": display,
                                    "createTime": ended}
        if checkpoint is not None:
            deployed["checkpointId"] = checkpoint
        endpoint: dict[str, Any] = {
            "name": name, "displayName": display, "deployedModels": [deployed],
            "trafficSplit": {deployed["id"]: 100}, "createTime": ended, "updateTime": ended,
        }
        if view.get("labels"):
            endpoint["labels"] = dict(view["labels"])
        return endpoint
    raise NotFound(f"Endpoint {name} not found.")


# --------------------------------------------------------------------------- rebase and LROs


def _source_job(state: EmulatorState, ref: dict[str, Any]) -> EmulatedJob:
    """The succeeded job a TunedModelRef names (tuning job or tuned model)."""
    kinds = [k for k in ("tunedModel", "tuningJob", "pipelineJob")
             if ref.get(k) or ref.get({"tunedModel": "tuned_model", "tuningJob": "tuning_job",
                                       "pipelineJob": "pipeline_job"}[k])]
    if len(kinds) != 1:
        raise InvalidArgument("tuned_model_ref must set exactly one of tuned_model, tuning_job "
                              "and pipeline_job.")
    snake = {"tunedModel": "tuned_model", "tuningJob": "tuning_job",
             "pipelineJob": "pipeline_job"}[kinds[0]]
    name = str(ref.get(kinds[0]) or ref.get(snake))
    parts = name.split("/")
    if kinds[0] == "pipelineJob" or len(parts) != 6 or parts[0] != "projects" \
            or parts[2] != "locations":
        raise NotFound(f"{'PipelineJob' if kinds[0] == 'pipelineJob' else 'Resource'} {name} "
                       "not found.")
    location, resource_id = parts[3], parts[5]
    if kinds[0] == "tuningJob" and parts[4] == "tuningJobs":
        job = state.get(location, resource_id)
    elif kinds[0] == "tunedModel" and parts[4] == "models":
        wanted = f"{_prefix(state, location)}/models/{resource_id.partition('@')[0]}"
        matches = [j for j, v in _succeeded(state, location)
                   if str(v["tunedModel"].get("model", "")).partition("@")[0] == wanted]
        if not matches:
            raise NotFound(f"Model {name} not found.")
        job = matches[0]
    else:
        raise NotFound(f"Resource {name} not found.")
    view = state.view(job)
    if view.get("state") != _SUCCEEDED:
        raise FailedPrecondition(
            f"Tuning job {state.job_name(job)} is in state {view.get('state')}: only the tuned "
            "model of a succeeded tuning job can be rebased.")
    return job


async def _rebase(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    """A new tuning job from a succeeded one's spec (overridden by the request's tuningJob),
    without the source's labels; answers its operation."""
    body = await _body(request)
    if not isinstance(body, dict):
        raise InvalidArgument("Invalid JSON payload received. Expected an object.")
    info = request.match_info
    ref = body.get("tunedModelRef", body.get("tuned_model_ref"))
    if not isinstance(ref, dict):
        raise InvalidArgument("tuned_model_ref is required.")
    source = _source_job(state, ref)
    spec = copy.deepcopy(source.spec)
    spec.pop("labels", None)
    override = body.get("tuningJob", body.get("tuning_job")) or {}
    if not isinstance(override, dict):
        raise InvalidArgument("Invalid value at 'tuning_job': expected an object.")
    spec.update(copy.deepcopy(override))
    destination = body.get("artifactDestination", body.get("artifact_destination")) or {}
    prefix = isinstance(destination, dict) and (destination.get("outputUriPrefix")
                                                or destination.get("output_uri_prefix"))
    if prefix and info["version"] == "v1beta1":
        spec.setdefault("outputUri", prefix)
    validated = state.validate_create(spec, api_version=info["version"])
    job = state.commit_create(validated, spec, api_version=info["version"],
                              project=info["project"], location=info["location"])
    op = request.app[OPERATIONS_KEY].start(job, state.now())
    return _operation_json(request, state, op)


def _operation_json(request: web.Request, state: EmulatorState,
                    op: EmulatedOperation) -> dict[str, Any]:
    """The google.longrunning.Operation: done once the job holds a quota slot (or ended)."""
    version = request.match_info["version"]
    job = state.get(op.location, op.job_id)
    view = state.view(job)
    waiting = view.get("tuningJobState") == "TUNING_JOB_STATE_WAITING_FOR_QUOTA"
    done = op.cancelled_s is not None or not waiting or "endTime" in view
    updated = op.cancelled_s if op.cancelled_s is not None else (
        op.create_s if not done else max(op.create_s, wire.parse_timestamp(view["updateTime"])))
    answer: dict[str, Any] = {
        "name": f"{state.job_name(job)}/operations/{op.op_id}",
        "metadata": {
            "@type": f"type.googleapis.com/google.cloud.aiplatform.{version}.{_METADATA_TYPE}",
            "genericMetadata": {"createTime": wire.format_timestamp(op.create_s),
                                "updateTime": wire.format_timestamp(updated)}},
    }
    if not done:
        return answer
    answer["done"] = True
    if op.cancelled_s is not None:
        answer["error"] = {"code": int(Code.CANCELLED), "message": "Operation was cancelled."}
    else:
        rendered = wire.render_tuning_job(view, enum_as_int=wire.wants_int_enums(request.query),
                                          api_version=version)
        answer["response"] = {
            "@type": f"type.googleapis.com/google.cloud.aiplatform.{version}.TuningJob",
            **rendered}
    return answer


def _operation(request: web.Request, state: EmulatorState) -> EmulatedOperation:
    info = request.match_info
    job = state.get(info["location"], info["job"])  # NotFound for an unknown job
    op_id = info["operation"].partition(":")[0]
    op = request.app[OPERATIONS_KEY].by_id.get(op_id)
    if op is None or op.job_id != job.job_id:
        raise NotFound(f"Operation {state.job_name(job)}/operations/{op_id} not found.")
    return op


async def _list_operations(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    info = request.match_info
    job = state.get(info["location"], info["job"])
    ops = sorted((op for op in request.app[OPERATIONS_KEY].by_id.values()
                  if op.job_id == job.job_id), key=lambda op: op.create_s, reverse=True)
    if not ops:
        return {}
    return {"operations": [_operation_json(request, state, op) for op in ops]}


async def _get_operation(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    return _operation_json(request, state, _operation(request, state))


async def _wait_operation(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    # WaitOperationRequest carries only a timeout; the emulated clock does not move while a
    # request waits, so the answer is the operation as it is now.
    await _body(request)
    return _operation_json(request, state, _operation(request, state))


async def _cancel_operation(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    """Cancelling an unfinished rebase cancels the job it started; a done one is unaffected."""
    await _body(request)
    op = _operation(request, state)
    if "done" not in _operation_json(request, state, op):
        op.cancelled_s = state.now()
        state.cancel(op.location, op.job_id)
    return {}


async def _delete_operation(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    op = _operation(request, state)
    del request.app[OPERATIONS_KEY].by_id[op.op_id]
    return {}


# --------------------------------------------------------------------------- v1beta1 tools


async def _optimize(request: web.Request, state: EmulatorState) -> list[dict[str, Any]]:
    return optimize_prompt(await _body(request))


async def _validate_reward(request: web.Request, state: EmulatorState) -> dict[str, Any]:
    return validate_reward(await _body(request))
