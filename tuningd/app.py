"""Composition root: builds and wires every part of the daemon, signals, ordered shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp
import structlog
from aiohttp import web

from tuningd import __version__
from tuningd.adapters.google_auth import (
    AnonymousTokenSource,
    TokenSource,
    token_source_from_settings,
)
from tuningd.adapters.log import Format, configure_logging
from tuningd.adapters.metrics import Metrics, build_registry, metrics_handler
from tuningd.adapters.preflight import check_at_start
from tuningd.adapters.secret_files import TokenFileError, bind_private_unix_socket, read_token_file
from tuningd.adapters.stores import open_store
from tuningd.adapters.systemd_notify import Notifier, Watchdog
from tuningd.adapters.vertex_http import VertexClient
from tuningd.config import PollingSettings, ServerSettings, Settings, load_settings
from tuningd.core import limits, recovery
from tuningd.core.budget import BudgetSettings
from tuningd.core.errors import ConfigError
from tuningd.http.api import make_api_app
from tuningd.http.connections import (
    ConnectionGuard,
    ConnectionLimits,
    raise_descriptor_limit,
    tcp_listeners,
    throttle_asyncio_accept_errors,
)
from tuningd.http.passthrough import Passthrough
from tuningd.http.protocol import EnvelopeAppRunner
from tuningd.ports import ChangeFeed, JobStore, Leases
from tuningd.service.engine import Engine, EngineSettings
from tuningd.service.facade import JobService
from tuningd.service.leadership import Leadership
from tuningd.service.retention import Retention
from tuningd.service.standby import Standby
from tuningd.vertex import wire
from tuningd.vertex.models import ModelCatalog, UnknownModels, catalog_from_sizes

log = structlog.get_logger("tuningd.app")


def engine_settings(settings: Settings, *, shared: bool = False) -> EngineSettings:
    """The core policy values for a configuration (`shared`: one of several instances on one
    store, whose unknown creates also wait out a former leader's lease)."""
    lim, pol = settings.limits, settings.polling
    return EngineSettings(
        limits=limits.Limits(max_active=lim.max_active, per_location=dict(lim.per_location),
                             per_base_model=dict(lim.per_base_model)),
        polling=pol,
        retry=settings.retry,
        budget=BudgetSettings(requests_per_minute=lim.requests_per_minute,
                                     creates_per_minute=lim.creates_per_minute),
        scheduling=settings.scheduling,
        reconcile=recovery.AbsenceRule.from_settings(
            settings.reconcile, request_timeout_s=settings.vertex.request_timeout_s,
            leader_grace_s=settings.ha.lease_ttl_s if shared else 0.0),
        breaker=settings.breaker,
        sweep_interval_s=settings.sweep.interval_s,
        # With both allow-lists set, tuningd knows every place it may ever use: sweep them all,
        # so remote jobs of a lost database are found even where no local job remains.
        sweep_places=tuple((p, loc) for p in settings.vertex.allowed_projects
                           for loc in settings.vertex.allowed_locations),
        cancel_unowned=settings.sweep.cancel_unowned,
        tick_s=min(1.0, pol.initial_interval_s),
    )


def model_catalog(settings: Settings) -> ModelCatalog:
    """The base-model catalog of a configuration ([models]), keyed by canonical model ids."""
    m = settings.models
    return catalog_from_sizes({wire.base_model_id(name): sizes for name, sizes in m.known.items()},
                              unknown=UnknownModels(m.unknown))


def connection_limits(server: ServerSettings) -> ConnectionLimits:
    """The control API's connection cap and timeouts for a configuration."""
    return ConnectionLimits(max_connections=server.max_connections,
                            header_timeout_s=server.header_timeout_s,
                            keepalive_timeout_s=server.keepalive_timeout_s)


def _read_token(path: str, env: Mapping[str, str]) -> str | None:
    if not path:
        return None
    try:
        return read_token_file(path, credentials_dir=env.get("CREDENTIALS_DIRECTORY", ""))
    except TokenFileError as exc:
        raise ConfigError(f"config key server.token_file: {exc.message}") from None


class Daemon:
    """Everything one running tuningd owns, started and stopped in a fixed order."""

    def __init__(self, settings: Settings, *, emulator_args: argparse.Namespace | None = None,
                 env: Mapping[str, str] | None = None, config_path: str | None = None) -> None:
        self.settings = settings
        self._emulator_args = emulator_args
        self._env = os.environ if env is None else env
        self._config_path = config_path
        self.notifier = Notifier(self._env)
        self.watchdog = Watchdog(self.notifier)
        self.registry = build_registry()
        self.metrics = Metrics(self.registry)
        self.metrics.set_start_time(time.time())
        self.stop_event = asyncio.Event()
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self.emulator: Any = None
        self.store: JobStore | None = None
        self.engine: Engine | None = None
        # Several instances on one store (the store has leases): who runs the engine.
        self.leadership: Leadership | None = None
        self.jobs: JobService | None = None
        self.catalog = model_catalog(settings)
        self._session: aiohttp.ClientSession | None = None
        self._tokens: TokenSource = AnonymousTokenSource()
        self._runner: web.AppRunner | None = None
        self._guard: ConnectionGuard | None = None
        self.urls: list[str] = []

    async def _start_emulator(self) -> None:
        from tuningd.emulator.config import EmulatorConfig
        from tuningd.emulator.server import Emulator

        # `serve`'s --emulator-* flags when given (their defaults otherwise); where it listens
        # comes from [emulator].
        a = self._emulator_args
        gcs = getattr(a, "emulator_gcs_root", None)
        self.emulator = Emulator(EmulatorConfig(
            job_seconds=getattr(a, "emulator_job_seconds", 20.0),
            pending_seconds=getattr(a, "emulator_pending_seconds", 2.0),
            max_concurrent=getattr(a, "emulator_max_concurrent", 2),
            gcs_root=Path(gcs) if gcs else None, strict_unknown_fields=False),
            host=self.settings.emulator.host, port=self.settings.emulator.port,
            state_dir=Path(self.settings.emulator.state_dir) if self.settings.emulator.state_dir
            else None)
        await self.emulator.start()
        self.settings = dataclasses.replace(
            self.settings, vertex=dataclasses.replace(self.settings.vertex,
                                                      endpoint=self.emulator.url))
        if self._config_path is None and not {"TUNINGD_STORE_PATH",
                                               "TUNINGD_STORE_URL"} & set(self._env):
            # The database lives as long as the emulator's jobs: beside them when the emulator
            # keeps them, else in a temporary directory (a database that outlived an in-memory
            # emulator would only hold jobs Vertex "lost").
            state_dir = self.settings.emulator.state_dir
            if not state_dir:
                self._tempdir = tempfile.TemporaryDirectory(prefix="tuningd-")
                state_dir = self._tempdir.name
            self.settings = dataclasses.replace(
                self.settings, store=dataclasses.replace(
                    self.settings.store, path=str(Path(state_dir) / "tuningd.db")))
        state = self._state_warning()
        polling = self._demo_polling(getattr(a, "emulator_job_seconds", 20.0))
        log.info("emulator.embedded", url=self.emulator.url, store=self.settings.store.shown,
                 state=state,
                 **({"polling_initial_interval_s": polling.initial_interval_s,
                     "polling_max_interval_s": polling.max_interval_s,
                     "hint": "polling scaled to the emulator's job length; a config file or "
                             "TUNINGD_POLLING_* sets it"} if polling else {}))

    def _state_warning(self) -> str:
        """Where the demo's state lives, said plainly (with a warning) when it will not last."""
        if self._tempdir is not None:
            log.warning("state.not_persisted", dir=self._tempdir.name,
                        hint="state is temporary: the database and the emulator's jobs are "
                             "deleted when tuningd stops; serve --emulator --state-dir DIR "
                             "keeps them")
            return f"temporary, deleted on stop ({self._tempdir.name})"
        if not self.settings.emulator.state_dir:
            log.warning("emulator.state_not_persisted",
                        hint="the emulator forgets its jobs when tuningd stops, so jobs still "
                             "running then fail as 'remote job lost' after a restart; "
                             "--state-dir DIR or emulator.state_dir keeps them")
            return "emulator jobs in memory only"
        return self.settings.emulator.state_dir

    def _demo_polling(self, job_seconds: float) -> PollingSettings | None:
        """With --emulator and no word on polling, poll on the scale of the emulated jobs (a 20 s
        job polled every 30 s would jump from pending to succeeded): its running sub-states
        and a cancel show as they happen. Kept in the environment, so a reload keeps it."""
        if self._config_path is not None or any(k.startswith("TUNINGD_POLLING_")
                                                for k in self._env):
            return None
        initial_s = max(0.2, job_seconds / 20)
        max_s = max(initial_s, job_seconds / 10)
        # The embedded emulator's run time does not follow a job's tokens, so an end expected
        # from earlier jobs would be wrong here: never wait longer than the longest interval.
        self._env = {**self._env, "TUNINGD_POLLING_INITIAL_INTERVAL_S": str(initial_s),
                     "TUNINGD_POLLING_MAX_INTERVAL_S": str(max_s),
                     "TUNINGD_POLLING_QUIET_MAX_S": str(max_s)}
        polling = dataclasses.replace(self.settings.polling, initial_interval_s=initial_s,
                                      max_interval_s=max_s, quiet_max_s=max_s)
        self.settings = dataclasses.replace(self.settings, polling=polling)
        return polling

    def _token_source(self) -> TokenSource:
        if self.emulator is not None:
            return AnonymousTokenSource()
        v = self.settings.vertex
        return token_source_from_settings(v.credentials_file, anonymous=v.anonymous)

    async def start(self) -> None:
        s = self.settings
        # First: a refused token file must stop the start before the store or Vertex is touched.
        token = _read_token(s.server.token_file, self._env)
        if s.emulator.enabled or (self._emulator_args is not None
                                  and self._emulator_args.emulator):
            await self._start_emulator()
            s = self.settings
        # A frozen leader's open transaction ends well before its lease would.
        self.store = await open_store(s.store, stale_transaction_s=s.ha.lease_ttl_s / 2)
        self._session = aiohttp.ClientSession()
        self._tokens = self._token_source()
        vertex = VertexClient(self._session, self._tokens, endpoint=s.vertex.endpoint,
                              api_version=s.vertex.api_version,
                              timeout_s=s.vertex.request_timeout_s,
                              observer=self.metrics.observe_vertex_request)
        if isinstance(self.store, Leases) and isinstance(self.store, ChangeFeed):
            self.jobs = self.leadership = self._leadership(self.store, vertex)
        else:
            # One instance owns the store (SQLite): it runs the engine, no lease.
            self.engine = Engine(self.store, vertex, engine_settings(s), metrics=self.metrics,
                                 on_progress=self.watchdog.progress)
            await self.engine.start()
            self.metrics.set_leader(True)
            self.jobs = self.engine
        app = make_api_app(
            self.jobs, token=token,
            allowed_projects=s.vertex.allowed_projects,
            allowed_locations=s.vertex.allowed_locations,
            max_body_bytes=s.server.max_body_bytes,
            metrics_handler=metrics_handler(self.registry), readiness=self._readiness,
            observe_request=self.metrics.observe_api_request, catalog=lambda: self.catalog,
            passthrough=Passthrough(vertex, self.jobs),
            instance=None if self.leadership is None else self.leadership.status)
        await self._serve(app, s.server)
        log.info("daemon.ready", version=__version__, listen=self.urls,
                 store=s.store.shown, vertex=s.vertex.endpoint or "googleapis",
                 max_active=s.limits.max_active)

    def _leadership(self, store: JobStore, vertex: VertexClient) -> Leadership:
        """The lease, the engine while this instance holds it, the standby facade otherwise."""
        s = self.settings

        def make_engine(fenced: JobStore, may_create: Callable[[], bool]) -> Engine:
            # Built at each takeover, with the settings of that moment (a reload included).
            return Engine(fenced, vertex, engine_settings(self.settings, shared=True),
                          metrics=self.metrics, on_progress=self.watchdog.progress,
                          may_create=may_create, shared=True)

        standby = Standby(store, scheduling=lambda: self.settings.scheduling,
                          budget=engine_settings(s).budget,
                          limits=lambda: engine_settings(self.settings).limits)
        return Leadership(store, settings=s.ha, holder=s.ha.holder(default_instance_id()),
                          make_engine=make_engine, standby=standby, metrics=self.metrics,
                          drain_s=s.server.drain_timeout_s, on_progress=self.watchdog.progress)

    async def _serve(self, app: web.Application, server: ServerSettings) -> None:
        limits = connection_limits(server)
        fd_limit = raise_descriptor_limit(limits)
        self._runner = EnvelopeAppRunner(app, access_log=None, shutdown_timeout=2.0,
                                         keepalive_timeout=limits.keepalive_timeout_s)
        await self._runner.setup()
        assert self._runner.server is not None
        self._guard = ConnectionGuard(self._runner.server, limits)
        throttle_asyncio_accept_errors(asyncio.get_running_loop(), self._guard.accept_report)
        try:
            listeners = tcp_listeners(server.host, server.port)
        except OSError as exc:
            hint = (" (another program holds it: stop it, or choose another server.port)"
                    if exc.errno == errno.EADDRINUSE else "")
            raise ConfigError(f"config keys server.host/server.port: cannot listen on "
                              f"{server.host}:{server.port}: "
                              f"{os.strerror(exc.errno) if exc.errno else exc}{hint}") from None
        for sock in listeners:
            await self._guard.start_site(self._runner, sock, f"http://{server.host}")
        if server.socket:
            _remove_stale_socket(server.socket)
            try:
                sock = bind_private_unix_socket(server.socket)
            except OSError as exc:
                raise ConfigError(f"config key server.socket: cannot bind {server.socket}: "
                                  f"{exc.strerror}") from None
            await self._guard.start_site(self._runner, sock, f"unix:{server.socket}")
        self.urls = [_url(addr) for addr in self._runner.addresses]
        capacity = self._guard.capacity()
        if capacity < limits.max_connections:
            log.warning("server.connections_capped", max_connections=limits.max_connections,
                        capacity=capacity, fd_limit=fd_limit,
                        hint=f"raise the descriptor limit (LimitNOFILE, ulimit -n) to "
                             f"{limits.max_connections + limits.reserved_fds}")

    async def _readiness(self) -> dict[str, bool | str]:
        checks: dict[str, bool | str] = {}
        assert self.store is not None
        checks["store_writable"] = await self.store.check_writable() or "store not writable"
        return checks

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply limits, polling, models and log level."""
        self.notifier.reloading()
        try:
            fresh = load_settings(self._config_path, self._env)
        except ConfigError as exc:
            log.error("daemon.reload_failed", error=exc.message)
            self.notifier.ready(status="reload failed; running with the previous settings")
            return
        configure_logging(fresh.logging.level, cast(Format, fresh.logging.format))
        self.settings = dataclasses.replace(self.settings, limits=fresh.limits,
                                            polling=fresh.polling, retry=fresh.retry,
                                            scheduling=fresh.scheduling, logging=fresh.logging,
                                            reconcile=fresh.reconcile, sweep=fresh.sweep,
                                            breaker=fresh.breaker, models=fresh.models)
        self.catalog = model_catalog(self.settings)
        engine = self.engine if self.leadership is None else self.leadership.engine
        if engine is not None:
            engine.reload(engine_settings(self.settings, shared=self.leadership is not None))
        log.info("daemon.reloaded", max_active=fresh.limits.max_active,
                 initial_interval_s=fresh.polling.initial_interval_s,
                 log_level=fresh.logging.level)
        self.notifier.ready(status="reloaded")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start()
            self.notifier.ready(status=f"serving on {', '.join(self.urls)}")
            # One TaskGroup: if a background task dies, the daemon stops loudly (design §7).
            async with asyncio.TaskGroup() as tg:
                if self.leadership is not None:
                    # Leads (engine, renew, change feed) while it holds the lease; drains and
                    # releases the lease on stop.
                    tg.create_task(self.leadership.run(self.stop_event), name="leadership")
                else:
                    assert self.engine is not None
                    tg.create_task(self.engine.run(self.stop_event), name="engine")
                tg.create_task(self._status_loop(), name="status")
                tg.create_task(self._preflight(), name="preflight")
                # Every instance prunes (a second pass on a shared store deletes nothing).
                assert self.store is not None
                retention = Retention(self.store, metrics=self.metrics,
                                      retention_s=self.settings.store.retention_days * 86_400)
                tg.create_task(retention.run(self.stop_event), name="retention")
                watchdog = tg.create_task(self.watchdog.run(), name="watchdog")
                await self.stop_event.wait()
                watchdog.cancel()
        finally:
            await self.shutdown()

    async def _preflight(self) -> None:
        """Warn (once each, with the fix) when Vertex is unreachable or no credentials work;
        the daemon runs on either way. Nothing to check against the embedded emulator."""
        if self.emulator is not None or self._session is None:
            return
        v = self.settings.vertex
        tokens = None if isinstance(self._tokens, AnonymousTokenSource) else self._tokens
        # Google's regional hosts share one front end: one of them answering is the evidence.
        location = (v.allowed_locations or ("us-central1",))[0]
        try:
            await check_at_start(self._session, endpoint_url=v.base_url(location),
                                 configured=bool(v.endpoint),
                                 token=None if tokens is None else tokens.token)
        except Exception:  # a check must never take the daemon down
            log.exception("preflight.failed")

    async def _status_loop(self) -> None:
        while not self.stop_event.is_set():
            if self.jobs is not None:
                counts = {s.value: n for s, n in self.jobs.state_counts().items() if n}
                line = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "idle"
                if self.leadership is not None:
                    line = f"{self.leadership.role} {line}"
                self.notifier.status(line)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=10.0)

    async def shutdown(self) -> None:
        """Ordered stop: no new creates, in-flight calls finish, listeners close, store closes."""
        self.notifier.stopping()
        log.info("daemon.stopping")
        if self.leadership is not None:
            self.leadership.draining = True  # (its run drained the engine and left the lease)
        elif self.engine is not None:
            await self.engine.drain(self.settings.server.drain_timeout_s)
        if self._guard is not None:
            self._guard.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.store is not None:
            await self.store.close()
        if self.emulator is not None:
            await self.emulator.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            log.info("state.deleted", dir=self._tempdir.name)
        log.info("daemon.stopped")


def default_instance_id() -> str:
    """hostname-pid: unique among instances unless two share a host name and a pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_stale_socket(path: str) -> None:
    # A socket file left by a killed daemon would make bind() fail; the store lock already
    # guarantees no other live daemon owns it.
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()


def _url(addr: Any) -> str:
    if isinstance(addr, str):
        return f"unix:{addr}"
    host, port = addr[0], addr[1]
    return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"
