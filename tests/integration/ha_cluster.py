"""Several tuningd instances in one process on one shared MemoryStore, with the emulator.

Each `Instance` is what one daemon on a shared database is: its own store connection, its own
Vertex client, the leadership service (engine while leading, standby facade otherwise) and the
control API served over real loopback HTTP. `kill()` is a crash: the connection goes first (no
lease release, no write), then every task of the instance is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from engine_harness import LOCATION, PROJECT, spec

from tuningd.adapters.google_auth import AnonymousTokenSource
from tuningd.adapters.memory import MemoryBacking, MemoryStore
from tuningd.adapters.metrics import Metrics, build_registry
from tuningd.adapters.vertex_http import VertexClient
from tuningd.config_ha import HaSettings
from tuningd.core.model import LABEL_JOB_ID, Job
from tuningd.emulator import Emulator, EmulatorConfig
from tuningd.emulator.state import EmulatedJob
from tuningd.http.api import make_api_app
from tuningd.ports import JobStore
from tuningd.service.engine import Engine, EngineSettings
from tuningd.service.leadership import Leadership, Role
from tuningd.service.standby import Standby

BASE = f"/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 20.0,
                     what: str = "condition") -> None:
    """Wait until `check()` holds, looking every 20 ms (the state lives in other tasks)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Instance:
    """One daemon on the shared store."""

    def __init__(self, cluster: Cluster, name: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.name = name
        self.store: MemoryStore = cluster.backing.connect()
        self.metrics = Metrics(build_registry())
        self.vertex = VertexClient(cluster.session, AnonymousTokenSource(),
                                   endpoint=cluster.emulator.url)

        def make_engine(fenced: JobStore, may_create: Callable[[], bool]) -> Engine:
            return Engine(fenced, self.vertex, cluster.engine_settings, metrics=self.metrics,
                          may_create=may_create, shared=True)

        self.standby = Standby(self.store, scheduling=lambda: cluster.engine_settings.scheduling,
                               budget=cluster.engine_settings.budget,
                               limits=lambda: cluster.engine_settings.limits)
        self.leadership = Leadership(self.store, settings=cluster.ha, holder=name,
                                     make_engine=make_engine, standby=self.standby,
                                     metrics=self.metrics, drain_s=0.5, monotonic=monotonic)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.server: TestServer | None = None

    async def start(self) -> None:
        app = make_api_app(self.leadership, instance=self.leadership.status)
        self.server = TestServer(app)
        await self.server.start_server()
        self.task = asyncio.create_task(self.leadership.run(self.stop), name=self.name)

    @property
    def leading(self) -> bool:
        return self.leadership.role == Role.LEADER

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def create(self, request_id: str) -> dict[str, Any]:
        """POST a job through this instance's API; the TuningJob answered."""
        async with self.cluster.session.post(self.url(f"{BASE}?requestId={request_id}"),
                                             json=spec()) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return dict(body)

    async def cancel(self, job_id: str) -> None:
        async with self.cluster.session.post(self.url(f"{BASE}/{job_id}:cancel")) as resp:
            assert resp.status == 200, await resp.text()

    async def kill(self) -> None:
        """A crash: the store connection dies first, then every task is cancelled."""
        await self.store.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        if self.server is not None:
            await self.server.close()
        await self.store.close()


class Cluster:
    """The shared store, the emulator, and the instances on them."""

    def __init__(self, ha: HaSettings, engine_settings: EngineSettings,
                 emulator_config: EmulatorConfig,
                 store_clock: Callable[[], float] = time.monotonic) -> None:
        self.ha = ha
        self.engine_settings = engine_settings
        self.backing = MemoryBacking(store_clock)
        self.store = self.backing.connect()
        self.emulator = Emulator(emulator_config)
        self.instances: list[Instance] = []
        self.session: aiohttp.ClientSession

    async def add(self, name: str, monotonic: Callable[[], float] = time.monotonic) -> Instance:
        instance = Instance(self, name, monotonic)
        self.instances.append(instance)
        await instance.start()
        return instance

    def leaders(self) -> list[Instance]:
        return [i for i in self.instances if i.leading]

    async def leader(self, timeout_s: float = 20.0) -> Instance:
        """The one leader, once there is one."""
        async def one() -> bool:
            return len(self.leaders()) == 1
        await eventually(one, timeout_s=timeout_s, what="a leader")
        return self.leaders()[0]

    def remote_for(self, job_id: str) -> list[EmulatedJob]:
        return [j for j in self.emulator.state.jobs.values()
                if (j.spec.get("labels") or {}).get(LABEL_JOB_ID) == job_id]

    async def job(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        assert job is not None, job_id
        return job


@asynccontextmanager
async def open_cluster(ha: HaSettings, engine_settings: EngineSettings,
                       emulator_config: EmulatorConfig,
                       store_clock: Callable[[], float] = time.monotonic
                       ) -> AsyncIterator[Cluster]:
    cluster = Cluster(ha, engine_settings, emulator_config, store_clock)
    await cluster.emulator.start()
    cluster.session = aiohttp.ClientSession()
    try:
        yield cluster
    finally:
        for instance in cluster.instances:
            await instance.close()
        await cluster.session.close()
        await cluster.emulator.stop()
