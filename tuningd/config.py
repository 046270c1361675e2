"""Typed, validated settings from a TOML file plus TUNINGD_<SECTION>_<KEY> environment overrides."""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from tuningd import config_values
from tuningd.config_ha import HaSettings
from tuningd.config_values import (
    FrozenMap,
    from_toml,
    parse_env,
    plain,
    rule_problem,
    type_problem,
)
from tuningd.config_values import Section as _Section
from tuningd.config_values import hints as _hints
from tuningd.config_values import key as _key
from tuningd.core.errors import ConfigError
from tuningd.vertex.models import ADAPTER_SIZES_BY_NUMBER, DEFAULT_MODEL_SIZES, UnknownModels

__all__ = ["SECTIONS", "FrozenMap", "Settings", "find_config_file", "load_settings",
           "read_toml", "settings_from"]

ENV_PREFIX = "TUNINGD_"
ENV_CONFIG_PATH = "TUNINGD_CONFIG"
CONFIG_FILE_NAME = "tuningd.toml"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
API_VERSIONS = ("v1", "v1beta1")


@dataclass(frozen=True)
class ServerSettings(_Section):
    """The control API listener."""

    section: ClassVar[str] = "server"

    host: str = _key("127.0.0.1")
    port: int = _key(8470, min_value=0, max_value=65535)
    token_file: str = _key("")
    socket: str = _key("")
    max_body_bytes: int = _key(1_048_576, min_value=1)
    drain_timeout_s: float = _key(10.0, min_value=0)
    # Client connections held at once; past it the oldest idle one is closed, and when all are
    # busy a newcomer gets 503. Also bounded by the descriptor limit (see systemd LimitNOFILE).
    max_connections: int = _key(256, min_value=1)
    # A request's head (line and headers) must arrive within this many seconds of the
    # connection opening or of its first byte, so silent and slowloris clients are dropped.
    header_timeout_s: float = _key(10.0, positive=True)
    # A keep-alive connection with no request is closed after this many seconds.
    keepalive_timeout_s: float = _key(75.0, positive=True)
    # Serve a non-loopback host without a token: only behind something that authenticates.
    allow_insecure: bool = _key(False)

    def _cross_check(self) -> None:
        if not self.host:
            raise ConfigError("config key server.host: must not be empty")
        if not self.token_file and not self.allow_insecure and not is_loopback_host(self.host):
            raise ConfigError(
                f"config key server.host: {self.host!r} is reachable from other machines and "
                "server.token_file is not set, so anyone who can connect could create and cancel "
                "jobs; set server.token_file, bind 127.0.0.1, or set "
                "server.allow_insecure = true if something in front authenticates")


def is_loopback_host(host: str) -> bool:
    """Whether a bind address reaches this machine only (pure: names are not resolved).

    "localhost" counts (RFC 6761 reserves it for loopback); any other name might resolve to
    anything, and 0.0.0.0 or :: bind every interface."""
    name = host.strip().lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StoreSettings(_Section):
    """Where the jobs live: `url` "" is the SQLite file at `path`, else sqlite:///PATH or
    postgresql://USER@HOST/DB (its password best in PGPASSWORD or ~/.pgpass, shown as ***)."""

    section: ClassVar[str] = "store"

    path: str = _key(config_values.DEFAULT_STORE_PATH)
    url: str = _key("")
    # Ended jobs (and their history) are deleted this many days after they ended; 0 = never.
    retention_days: float = _key(90.0, min_value=0)

    def _cross_check(self) -> None:
        if not self.path:
            raise ConfigError("config key store.path: must not be empty")
        if (problem := config_values.url_problem(self.url)) is not None:
            raise ConfigError(f"config key store.url: {problem}")

    @property
    def sqlite_path(self) -> str:  # the sqlite:// url's file, else path
        return config_values.sqlite_path(self.url, self.path)

    @property
    def shown(self) -> str:  # for logs: a URL's password as ***
        return config_values.redact_url(self.url) if self.url else self.path


@dataclass(frozen=True)
class VertexSettings(_Section):
    """How to reach Vertex AI."""

    section: ClassVar[str] = "vertex"

    endpoint: str = _key("")
    # Jobs go to Vertex at the version their create came in on; this one is only for tuningd's
    # own calls (the sweep) and for jobs stored before tuningd remembered versions.
    api_version: str = _key("v1", choices=API_VERSIONS)
    credentials_file: str = _key("")
    # Send no Authorization header at all: for emulators and test servers, never for Google.
    anonymous: bool = _key(False)
    allowed_projects: tuple[str, ...] = _key(())
    allowed_locations: tuple[str, ...] = _key(())
    request_timeout_s: float = _key(60.0, positive=True)

    def _cross_check(self) -> None:
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                "config key vertex.endpoint: must start with http:// or https://, "
                f"got {self.endpoint!r}"
            )
        for name in ("allowed_projects", "allowed_locations"):
            if any(not item for item in getattr(self, name)):
                raise ConfigError(f"config key vertex.{name}: entries must not be empty")

    def base_url(self, location: str) -> str:
        """The Vertex endpoint for a location, without a trailing slash or API version."""
        if self.endpoint:
            return self.endpoint.rstrip("/")
        return f"https://{location}-aiplatform.googleapis.com"


@dataclass(frozen=True)
class ModelsSettings(_Section):
    """The base models tuningd knows, and what a create naming another one does."""

    section: ClassVar[str] = "models"

    # "forward": Vertex judges a model tuningd does not list (a release newer than tuningd, an
    # alias, a -latest or preview id, an open model); "refuse": 400 INVALID_ARGUMENT at once.
    unknown: str = _key(UnknownModels.FORWARD.value, choices=tuple(m.value for m in UnknownModels))
    # Model id -> the adapter sizes Vertex allows for it (numbers; empty = not checked here).
    known: Mapping[str, tuple[int, ...]] = _key(FrozenMap(DEFAULT_MODEL_SIZES))

    def _cross_check(self) -> None:
        sizes = sorted(ADAPTER_SIZES_BY_NUMBER)
        for name, numbers in self.known.items():
            bad = [n for n in numbers if n not in ADAPTER_SIZES_BY_NUMBER]
            if bad:
                raise ConfigError(
                    f"config key models.known: adapter sizes must be among "
                    f"{', '.join(map(str, sizes))}, got {name} = {list(numbers)!r}")


@dataclass(frozen=True)
class LimitsSettings(_Section):
    """Concurrency limits on active jobs and the per-location request budget."""

    section: ClassVar[str] = "limits"

    max_active: int = _key(1, min_value=1)
    per_location: Mapping[str, int] = _key(FrozenMap(), min_value=1)
    per_base_model: Mapping[str, int] = _key(FrozenMap(), min_value=1)
    requests_per_minute: int = _key(300, min_value=1)
    creates_per_minute: int = _key(30, min_value=1)


@dataclass(frozen=True)
class PollingSettings(_Section):
    """How often active jobs are polled (design §5)."""

    section: ClassVar[str] = "polling"

    initial_interval_s: float = _key(30.0, positive=True)
    max_interval_s: float = _key(300.0, positive=True)
    multiplier: float = _key(2.0, min_value=1.0)
    jitter: float = _key(0.2, min_value=0.0, max_value=1.0)
    batch_min_jobs: int = _key(2, min_value=1)
    # Cap while the job is PENDING (0: no extra cap); starting is when users watch closely.
    pending_max_interval_s: float = _key(0.0, min_value=0.0)
    # A list call costs one read however many jobs it returns, so it also refreshes jobs due
    # within this window (0: every active job there). Their schedules then move together and
    # the location is read once per round instead of once per job.
    batch_coalesce_s: float = _key(0.0, min_value=0.0)
    # The longest a running job that is not expected to end yet (see core/eta) goes unread:
    # an unexpected end (an early failure, a cancel from elsewhere) is seen within this.
    quiet_max_s: float = _key(1200.0, positive=True)

    @property
    def effective_coalesce_s(self) -> float:
        """The batch-list window in seconds (inf when every active job rides along)."""
        return self.batch_coalesce_s or math.inf

    def _cross_check(self) -> None:
        if self.max_interval_s < self.initial_interval_s:
            raise ConfigError(
                "config key polling.max_interval_s: must be >= polling.initial_interval_s "
                f"({self.initial_interval_s:g}), got {self.max_interval_s:g}"
            )


@dataclass(frozen=True)
class ReconcileSettings(_Section):
    """When "not on Vertex" is believed: after an unknown create outcome, after a 404 (design §3).

    An empty list counts only from `vertex.request_timeout_s + list_lag_s` after the failed
    attempt ended; `absent_confirmations` empty lists, `confirm_spacing_s`, 2x, 4x ... apart,
    are needed before the job is created again.
    """

    section: ClassVar[str] = "reconcile"

    list_lag_s: float = _key(60.0, min_value=0.0)
    absent_confirmations: int = _key(3, min_value=1, max_value=20)
    confirm_spacing_s: float = _key(60.0, min_value=0.0)
    not_found_confirm_s: float = _key(60.0, min_value=0.0)


@dataclass(frozen=True)
class SweepSettings(_Section):
    """The periodic look at every job tuningd labelled, per project and location."""

    section: ClassVar[str] = "sweep"

    # Poll lists count as sweeps (they ask for every active job of tuningd's), so this only
    # bounds places whose jobs are all quiet (issue 11: a sweep is a read like any other).
    interval_s: float = _key(900.0, positive=True)
    cancel_unowned: bool = _key(True)


@dataclass(frozen=True)
class BreakerSettings(_Section):
    """Pausing creates to a project and location after a project-wide error, and probing."""

    section: ClassVar[str] = "breaker"

    probe_initial_s: float = _key(30.0, positive=True)
    probe_max_s: float = _key(900.0, positive=True)
    # Each probe wait is spread by up to this fraction, so daemons paused together do not
    # probe together.
    jitter: float = _key(0.2, min_value=0.0, max_value=1.0)

    def _cross_check(self) -> None:
        if self.probe_max_s < self.probe_initial_s:
            raise ConfigError(
                "config key breaker.probe_max_s: must be >= breaker.probe_initial_s "
                f"({self.probe_initial_s:g}), got {self.probe_max_s:g}"
            )


@dataclass(frozen=True)
class SchedulingSettings(_Section):
    """Queue order: priority first, plus aging so low priority is not starved (design §4)."""

    section: ClassVar[str] = "scheduling"

    aging_interval_s: float = _key(600.0, positive=True)
    # The most points aging may add (0: no cap), so a very old job does not outrank every
    # higher priority.
    max_aging_bonus: int = _key(0, min_value=0)


@dataclass(frozen=True)
class RetrySettings(_Section):
    """Full-jitter exponential backoff after transient errors and create 429s (design §5)."""

    section: ClassVar[str] = "retry"

    base_s: float = _key(2.0, positive=True)
    cap_s: float = _key(300.0, positive=True)

    def _cross_check(self) -> None:
        if self.cap_s < self.base_s:
            raise ConfigError(
                f"config key retry.cap_s: must be >= retry.base_s ({self.base_s:g}), "
                f"got {self.cap_s:g}"
            )


@dataclass(frozen=True)
class LoggingSettings(_Section):
    """Log verbosity and rendering."""

    section: ClassVar[str] = "logging"

    level: str = _key("info", choices=LOG_LEVELS)
    format: str = _key("auto", choices=LOG_FORMATS)


@dataclass(frozen=True)
class EmulatorSettings(_Section):
    """The in-process Vertex emulator (`tuningd serve --emulator`); off by default."""

    section: ClassVar[str] = "emulator"

    enabled: bool = _key(False)
    host: str = _key("127.0.0.1")
    port: int = _key(0, min_value=0, max_value=65535)
    # Where the emulator keeps its jobs across restarts (DIR/emulator.json); "" = in memory only.
    state_dir: str = _key("")


@dataclass(frozen=True)
class Settings:
    """All of tuningd's settings; build with `load_settings` / `settings_from` to validate input."""

    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    vertex: VertexSettings = field(default_factory=VertexSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    polling: PollingSettings = field(default_factory=PollingSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    emulator: EmulatorSettings = field(default_factory=EmulatorSettings)
    ha: HaSettings = field(default_factory=HaSettings)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The effective settings as plain TOML/JSON-able values (for `config show`).

        Holds no secrets: tuningd's config only ever names files that contain secrets.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, cls in SECTIONS.items():
            section = getattr(self, name)
            values: dict[str, Any] = {}
            for f in fields(cls):  # type: ignore[arg-type]
                values[f.name] = plain(getattr(section, f.name))
            if name == "store":
                values["url"] = config_values.redact_url(values["url"])
            out[name] = values
        return out


SECTIONS: Mapping[str, type[_Section]] = {
    "server": ServerSettings,
    "store": StoreSettings,
    "vertex": VertexSettings,
    "models": ModelsSettings,
    "limits": LimitsSettings,
    "polling": PollingSettings,
    "reconcile": ReconcileSettings,
    "sweep": SweepSettings,
    "breaker": BreakerSettings,
    "scheduling": SchedulingSettings,
    "retry": RetrySettings,
    "logging": LoggingSettings,
    "emulator": EmulatorSettings,
    "ha": HaSettings,
}



def settings_from(data: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Validated settings from parsed TOML `data` with `env` overrides on top (pure)."""
    for section_name, section_data in data.items():
        if section_name not in SECTIONS:
            raise ConfigError(
                f"config key {section_name}: unknown section (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(section_data, Mapping):
            raise ConfigError(f"config key {section_name}: must be a table")
    _check_env_names(env)
    sections: dict[str, _Section] = {}
    for section_name, cls in SECTIONS.items():
        section_data = data.get(section_name, {})
        hints = _hints(cls)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for key in section_data:
            if key not in known:
                raise ConfigError(
                    f"config key {section_name}.{key}: unknown key "
                    f"(known: {', '.join(sorted(known))})"
                )
        values: dict[str, Any] = {}
        if section_name == "store":
            values["path"] = config_values.default_store_path(env)
        for f in fields(cls):  # type: ignore[arg-type]
            hint = hints[f.name]
            dotted = f"{section_name}.{f.name}"
            env_name = f"{ENV_PREFIX}{section_name}_{f.name}".upper()
            if env_name in env:
                source = f" (from ${env_name})"
                try:
                    value = parse_env(hint, env[env_name])
                except ValueError as exc:
                    raise ConfigError(
                        f"config key {dotted}{source}: {exc}, got {env[env_name]!r}"
                    ) from None
            elif f.name in section_data:
                source = ""
                value = from_toml(hint, section_data[f.name])
            else:
                continue
            if section_name == "store" and f.name == "path" and value == "":
                continue  # "" means "the default location", as for the other path keys
            if f.metadata.get("choices") and isinstance(value, str):
                value = value.strip().lower()  # LEVEL=DEBUG is as clear as level=debug
            problem = type_problem(hint, value) or rule_problem(hint, value, f.metadata)
            if problem is not None:
                raise ConfigError(f"config key {dotted}{source}: {problem}")
            values[f.name] = value
        sections[section_name] = cls(**values)
    return Settings(**sections)  # type: ignore[arg-type]


def _check_env_names(env: Mapping[str, str]) -> None:
    """Refuse TUNINGD_<SECTION>_<KEY> variables whose key does not exist (typos)."""
    valid = {
        f"{ENV_PREFIX}{section_name}_{f.name}".upper()
        for section_name, cls in SECTIONS.items()
        for f in fields(cls)  # type: ignore[arg-type]
    }
    for name in env:
        if not name.startswith(ENV_PREFIX) or name in valid:
            continue
        section_name, _, key = name[len(ENV_PREFIX):].partition("_")
        cls = SECTIONS.get(section_name.lower())
        if cls is None:
            continue  # other TUNINGD_* variables (e.g. TUNINGD_CONFIG) are not settings
        known = sorted(f.name for f in fields(cls))  # type: ignore[arg-type]
        raise ConfigError(
            f"config key {section_name.lower()}.{key.lower()} (from ${name}): unknown key; "
            f"known keys: {', '.join(known)} (variable names are upper-case)"
        )


def find_config_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The TOML file to read: explicit path > $TUNINGD_CONFIG > $CONFIGURATION_DIRECTORY > none."""
    if path is not None and str(path) != "":
        return Path(path)
    if env.get(ENV_CONFIG_PATH):
        return Path(env[ENV_CONFIG_PATH])
    for directory in env.get("CONFIGURATION_DIRECTORY", "").split(":"):
        if directory:
            candidate = Path(directory) / CONFIG_FILE_NAME
            if candidate.is_file():
                return candidate
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a missing or malformed file is a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Find and read the config file (if any), apply `env` (default os.environ), validate."""
    environ: Mapping[str, str] = os.environ if env is None else env
    config_file = find_config_file(path, environ)
    data = read_toml(config_file) if config_file is not None else {}
    return settings_from(data, environ)
