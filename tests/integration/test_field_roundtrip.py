"""Every settable field of the installed TuningJob protos reaches the emulator unchanged.

The fields come from the installed google-cloud-aiplatform protos (tests.tools.gen_vertex_schema
walks them), not from tuningd's schema: a field tuningd does not know would be refused or dropped
and fail here. Bodies are created through tuningd's control API and engine (the harness forwards
at the version under test) to the emulator over HTTP, which stores the raw body it received.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from engine_harness import LOCATION, PROJECT, open_harness, settings
from google.cloud import aiplatform_v1, aiplatform_v1beta1

from tests.tools.gen_vertex_schema import collect
from tuningd.core.model import LABEL_JOB_ID
from tuningd.http.api import make_api_app

PROTO_TYPES = {"v1": aiplatform_v1, "v1beta1": aiplatform_v1beta1}
BASE = "gemini-2.5-flash"
# Vertex's rules between fields that are not proto oneofs (validation.py): one of each pair.
EXCLUSIVE = ({"learningRate", "learningRateMultiplier"}, {"epochCount", "stepCount"},
             {"singleRewardConfig", "compositeRewardConfig"})
# Values a rule constrains (the rest are generic per kind).
STRINGS = {"baseModel": BASE, "tunedTeacherModelSource": "projects/p/locations/l/models/7",
           "customBaseModel": "gs://b/weights/", "serviceAccount": "sa@p.iam.gserviceaccount.com"}

Key = tuple[str, str]  # (message type, JSON name)


class BodyMaker:
    """Builds valid create bodies from the proto rows; each oneof (and EXCLUSIVE pair) takes its
    members in turn across bodies, so enough bodies set every settable field at least once."""

    def __init__(self, version: str, tuned_model: str) -> None:
        self.messages, self.enums = collect(version)
        self.tuned_model = tuned_model
        self.turns: Counter[tuple[str, str]] = Counter()

    def settable(self, root: str = "TuningJob") -> set[Key]:
        """Every non-output-only field of every message reachable from root."""
        reach, stack = set(), [root]
        while stack:
            name = stack.pop()
            if name in reach:
                continue
            reach.add(name)
            for _, _, kind, type_name, flags in self.messages[name]:
                if "output" not in flags.split() and kind == "message":
                    stack.append(type_name)
        return {(name, row[1]) for name in reach for row in self.messages[name]
                if "output" not in row[4].split()}

    def _pick(self, message: str, group: str, members: list[str], covered: set[Key]) -> str:
        """The member with the most fields not yet covered below it; in turn on a tie."""
        turn = self.turns[(message, group)]
        self.turns[(message, group)] += 1
        rows = {r[1]: r for r in self.messages[message]}

        def uncovered(member: str) -> int:
            _, _, kind, type_name, _ = rows[member]
            below = self.settable(type_name) if kind == "message" else set()
            return len(({(message, member)} | below) - covered)

        ordered = members[turn % len(members):] + members[:turn % len(members)]
        return max(ordered, key=uncovered)

    def message(self, name: str, seen: frozenset[str], covered: set[Key]) -> dict[str, Any]:
        rows = [r for r in self.messages[name] if "output" not in r[4].split()]
        keep = {r[1] for r in rows}
        groups: dict[str, list[str]] = {}
        for r in rows:
            oneof = next((w[6:] for w in r[4].split() if w.startswith("oneof=")), None)
            if oneof:
                groups.setdefault(oneof, []).append(r[1])
        groups.update({"|".join(sorted(g)): sorted(g) for g in EXCLUSIVE if g <= keep})
        for group, members in groups.items():
            chosen = self._pick(name, group, members, covered)
            keep -= set(members) - {chosen}
        if name == "TuningJob" and "preTunedModel" in keep:
            keep.discard("customBaseModel")  # custom weights need base_model (validation.py)
        out: dict[str, Any] = {}
        for _, json_name, kind, type_name, flags in rows:
            if json_name not in keep or (kind == "message" and type_name in seen):
                continue
            value = self.value(name, json_name, kind, type_name, seen | {name}, covered)
            words = flags.split()
            out[json_name] = ({"k": value} if "map" in words
                              else [value] if "repeated" in words else value)
            covered.add((name, json_name))
        return out

    def value(self, message: str, json_name: str, kind: str, type_name: str,
              seen: frozenset[str], covered: set[Key]) -> Any:
        if kind == "message":
            return self.message(type_name, seen, covered)
        if kind == "enum":
            values = [v for v, n in self.enums[type_name] if n != 0]
            return values[0]
        if message == "PreTunedModel" and json_name == "tunedModelName":
            return self.tuned_model
        if kind == "string":
            if json_name in STRINGS:
                return STRINGS[json_name]
            return f"gs://b/{json_name}" if json_name.lower().endswith("uri") else f"{json_name}-x"
        return {"bool": True, "bytes": "AQI=", "double": 0.5, "float": 0.5, "int32": 3,
                "uint32": 3, "int64": "3", "uint64": "3", "duration": "1.500s",
                "timestamp": "2025-06-02T10:15:03.418225Z", "struct": {"a": [1, "b"]},
                "value": {"a": 1}, "listvalue": [1, "b"]}[kind]


def _present(messages: dict[str, Any], name: str, obj: Any, out: set[Key]) -> None:
    """The (message type, JSON name) keys a raw JSON body sets, walking the proto rows."""
    if not isinstance(obj, dict):
        return
    rows = {r[1]: r for r in messages[name]}
    for key, value in obj.items():
        if key not in rows:
            continue
        out.add((name, key))
        _, _, kind, type_name, flags = rows[key]
        if kind != "message":
            continue
        words = flags.split()
        items = (value.values() if "map" in words else value if "repeated" in words
                 else [value])
        for item in items:
            _present(messages, type_name, item, out)


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_every_settable_proto_field_arrives_unchanged(tmp_path: Path, version: str) -> None:
    """Bodies that together set every settable TuningJob field of the installed protos at this
    version, created through tuningd's API, reach the emulator byte-for-byte as sent (only
    tuningd's own labels added); no field is dropped."""
    # The engine's default upstream version stays v1: each job must go up at its own version.
    async with open_harness(tmp_path, engine=settings(max_active=500)) as h:
        source = h.emulator.state.create(
            {"baseModel": BASE, "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/t"}},
            api_version="v1", project=PROJECT, location=LOCATION)
        tuned = (f"projects/{h.emulator.config.project_number}/locations/{LOCATION}/models/"
                 f"{source.model_id}")
        maker = BodyMaker(version, tuned)
        settable = maker.settable()
        assert len(settable) > 100  # the walk reached the nested messages
        client = TestClient(TestServer(make_api_app(h.engine)))
        await client.start_server()
        sent_keys: set[Key] = set()
        arrived_keys: set[Key] = set()
        changed: list[tuple[dict[str, Any], dict[str, Any]]] = []
        try:
            for count in itertools.count(1):
                body = maker.message("TuningJob", frozenset(), sent_keys)
                # The body is valid proto3 JSON for the installed type at this version.
                PROTO_TYPES[version].TuningJob.from_json(json.dumps(body))
                resp = await client.post(
                    f"/{version}/projects/{PROJECT}/locations/{LOCATION}/tuningJobs", json=body)
                view = await resp.json()
                assert resp.status == 200, (view, body)
                local_id = view["name"].rsplit("/", 1)[-1]

                async def created(local_id: str = local_id) -> bool:
                    return bool(h.remote_for(local_id))

                await h.run_until(created, every=5.0)
                [remote] = h.remote_for(local_id)
                arrived = json.loads(json.dumps(remote.request_body))
                labels = {k: v for k, v in arrived.get("labels", {}).items()
                          if k != LABEL_JOB_ID and not k.startswith("tuningd")
                          and k != "managed-by"}
                arrived = {**arrived, "labels": labels}
                if arrived != body:
                    changed.append((body, arrived))
                _present(maker.messages, "TuningJob", arrived, arrived_keys)
                if sent_keys >= settable:
                    break
                assert count < 50, f"50 bodies leave fields unset: {settable - sent_keys}"
        finally:
            await client.close()
    assert sent_keys == settable
    dropped = sorted(settable - arrived_keys)
    assert dropped == []
    assert changed == []
