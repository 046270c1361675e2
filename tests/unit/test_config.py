"""Unit tests of tuningd.config: defaults, TOML, environment overrides, validation, lookup order."""

from __future__ import annotations

import json
import pickle
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from tuningd import config_values
from tuningd.config import (
    SECTIONS,
    FrozenMap,
    LimitsSettings,
    Settings,
    find_config_file,
    load_settings,
    settings_from,
)
from tuningd.core.errors import ConfigError
from tuningd.vertex.models import DEFAULT_MODEL_SIZES

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "config" / "tuningd.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    """With no file and no environment every key has its documented default."""
    s = load_settings(env={})
    assert s == Settings()
    assert (s.server.host, s.server.port, s.server.token_file, s.server.socket) == (
        "127.0.0.1", 8470, "", "")
    assert s.server.max_body_bytes == 1_048_576
    assert s.server.drain_timeout_s == 10.0
    assert s.store.path == "./tuningd.db"
    assert s.vertex.endpoint == "" and s.vertex.api_version == "v1"
    assert s.vertex.credentials_file == ""
    assert s.vertex.allowed_projects == () and s.vertex.allowed_locations == ()
    assert s.vertex.request_timeout_s == 60.0
    assert s.limits.max_active == 1
    assert dict(s.limits.per_location) == {} and dict(s.limits.per_base_model) == {}
    assert (s.limits.requests_per_minute, s.limits.creates_per_minute) == (300, 30)
    assert (s.polling.initial_interval_s, s.polling.max_interval_s) == (30.0, 300.0)
    assert (s.polling.multiplier, s.polling.jitter) == (2.0, 0.2)
    assert (s.reconcile.list_lag_s, s.reconcile.absent_confirmations,
            s.reconcile.confirm_spacing_s, s.reconcile.not_found_confirm_s) == (60.0, 3, 60.0, 60.0)
    assert (s.sweep.interval_s, s.sweep.cancel_unowned) == (900.0, True)
    assert s.polling.quiet_max_s == 1200.0
    assert (s.breaker.probe_initial_s, s.breaker.probe_max_s) == (30.0, 900.0)
    assert s.breaker.jitter == 0.2
    assert s.polling.batch_min_jobs == 2
    assert s.scheduling.aging_interval_s == 600.0
    assert (s.retry.base_s, s.retry.cap_s) == (2.0, 300.0)
    assert (s.logging.level, s.logging.format) == ("info", "auto")
    assert not s.emulator.enabled


def test_store_path_defaults_to_state_directory() -> None:
    """Under systemd the database goes to the first $STATE_DIRECTORY entry."""
    s = load_settings(env={"STATE_DIRECTORY": "/var/lib/tuningd:/var/lib/other"})
    assert s.store.path == "/var/lib/tuningd/tuningd.db"


def test_toml_file_values(tmp_path: Path) -> None:
    """TOML values are typed: ints widen to floats, arrays become tuples, tables maps."""
    cfg = write(tmp_path / "t.toml", """
[server]
port = 9000
drain_timeout_s = 3
[store]
path = "/data/x.db"
[vertex]
endpoint = "http://127.0.0.1:9999/"
api_version = "v1beta1"
allowed_projects = ["p1", "p2"]
[limits]
max_active = 4
per_location = { "us-central1" = 2, "europe-west4" = 1 }
per_base_model = { "gemini-2.0-flash-001" = 1 }
[polling]
initial_interval_s = 0.5
max_interval_s = 2
[logging]
level = "DEBUG"
format = "json"
[emulator]
enabled = true
""")
    s = load_settings(cfg, env={"STATE_DIRECTORY": "/ignored"})
    assert s.server.port == 9000
    assert s.server.drain_timeout_s == 3.0 and isinstance(s.server.drain_timeout_s, float)
    assert s.store.path == "/data/x.db"
    assert s.vertex.base_url("us-central1") == "http://127.0.0.1:9999"
    assert s.vertex.api_version == "v1beta1"
    assert s.vertex.allowed_projects == ("p1", "p2")
    assert s.limits.max_active == 4
    assert dict(s.limits.per_location) == {"us-central1": 2, "europe-west4": 1}
    assert dict(s.limits.per_base_model) == {"gemini-2.0-flash-001": 1}
    assert s.polling.initial_interval_s == 0.5 and s.polling.max_interval_s == 2.0
    assert s.logging.level == "debug" and s.logging.format == "json"
    assert s.emulator.enabled is True


def test_models_section_from_toml_env_and_defaults(tmp_path: Path) -> None:
    """[models]: forward by default with the shipped catalog; a [models.known] table or
    TUNINGD_MODELS_KNOWN replaces the list; sizes become immutable tuples."""
    assert Settings().models.unknown == "forward"
    assert dict(Settings().models.known) == dict(DEFAULT_MODEL_SIZES)
    cfg = write(tmp_path / "m.toml", """
[models]
unknown = "REFUSE"
[models.known]
"gemini-flash-latest" = []
"gemini-2.5-flash" = [1, 4]
""")
    s = load_settings(cfg, env={})
    assert s.models.unknown == "refuse"
    assert dict(s.models.known) == {"gemini-flash-latest": (), "gemini-2.5-flash": (1, 4)}
    env = {"TUNINGD_MODELS_KNOWN": "gemini-9-flash=1 2 16, meta/llama3_1@llama-3.1-8b="}
    s = load_settings(cfg, env=env)
    assert dict(s.models.known) == {"gemini-9-flash": (1, 2, 16),
                                    "meta/llama3_1@llama-3.1-8b": ()}
    assert settings_from(s.as_dict(), {}) == s
    assert hash(s) == hash(pickle.loads(pickle.dumps(s)))


def test_default_endpoint_is_per_location() -> None:
    """An empty endpoint means Google's regional Vertex host."""
    assert Settings().vertex.base_url("europe-west4") == (
        "https://europe-west4-aiplatform.googleapis.com")


def test_env_overrides_scalars_lists_tables_and_floats(tmp_path: Path) -> None:
    """TUNINGD_<SECTION>_<KEY> variables override the file for every kind of value."""
    cfg = write(tmp_path / "t.toml",
                "[limits]\nmax_active = 4\n[polling]\ninitial_interval_s = 5\n")
    env = {
        "TUNINGD_LIMITS_MAX_ACTIVE": "2",
        "TUNINGD_POLLING_INITIAL_INTERVAL_S": "0.2",
        "TUNINGD_POLLING_MAX_INTERVAL_S": "1.5",
        "TUNINGD_LIMITS_PER_LOCATION": "us-central1=2, europe-west4=1",
        "TUNINGD_LIMITS_PER_BASE_MODEL": "",
        "TUNINGD_VERTEX_ALLOWED_LOCATIONS": "us-central1, europe-west4",
        "TUNINGD_VERTEX_ALLOWED_PROJECTS": "",
        "TUNINGD_EMULATOR_ENABLED": "yes",
        "TUNINGD_LOGGING_LEVEL": "WARNING",
        "TUNINGD_STORE_PATH": "/tmp/y.db",
        "TUNINGD_CONFIG_UNRELATED": "x",  # not a section: ignored
    }
    s = load_settings(cfg, env=env)
    assert s.limits.max_active == 2
    assert s.polling.initial_interval_s == 0.2 and s.polling.max_interval_s == 1.5
    assert dict(s.limits.per_location) == {"us-central1": 2, "europe-west4": 1}
    assert dict(s.limits.per_base_model) == {}
    assert s.vertex.allowed_locations == ("us-central1", "europe-west4")
    assert s.vertex.allowed_projects == ()
    assert s.emulator.enabled is True
    assert s.logging.level == "warning"
    assert s.store.path == "/tmp/y.db"


# (toml data, env, key named in the message)
BAD: list[tuple[dict[str, Any], dict[str, str], str]] = [
    ({"server": {"host": ""}}, {}, "server.host"),
    ({"server": {"port": 70000}}, {}, "server.port"),
    ({"server": {"port": "80"}}, {}, "server.port"),
    ({"server": {"token_file": 3}}, {}, "server.token_file"),
    ({"server": {"socket": False}}, {}, "server.socket"),
    ({"server": {"max_body_bytes": 0}}, {}, "server.max_body_bytes"),
    ({"server": {"drain_timeout_s": -1}}, {}, "server.drain_timeout_s"),
    ({"server": {"max_connections": 0}}, {}, "server.max_connections"),
    ({"server": {"header_timeout_s": 0}}, {}, "server.header_timeout_s"),
    ({}, {"TUNINGD_SERVER_KEEPALIVE_TIMEOUT_S": "-1"}, "server.keepalive_timeout_s"),
    ({"server": {"allow_insecure": "yes"}}, {}, "server.allow_insecure"),
    ({"store": {"path": 1}}, {}, "store.path"),
    ({"store": {"url": "mysql://u@h/db"}}, {}, "store.url"),
    ({"store": {"url": "sqlite://"}}, {}, "store.url"),
    ({}, {"TUNINGD_STORE_URL": "postgresql://"}, "store.url"),
    ({"store": {"retention_days": -1}}, {}, "store.retention_days"),
    ({"vertex": {"endpoint": "ftp://x"}}, {}, "vertex.endpoint"),
    ({"vertex": {"api_version": "v2"}}, {}, "vertex.api_version"),
    ({"vertex": {"credentials_file": ["a"]}}, {}, "vertex.credentials_file"),
    ({"vertex": {"anonymous": "no"}}, {}, "vertex.anonymous"),
    ({"vertex": {"allowed_projects": "p1"}}, {}, "vertex.allowed_projects"),
    ({"vertex": {"allowed_locations": [""]}}, {}, "vertex.allowed_locations"),
    ({"vertex": {"request_timeout_s": 0}}, {}, "vertex.request_timeout_s"),
    ({"models": {"unknown": "ask"}}, {}, "models.unknown"),
    ({"models": {"known": {"m": [3]}}}, {}, "models.known"),
    ({"models": {"known": {"m": 4}}}, {}, "models.known"),
    ({"models": {"known": {"m": ["4"]}}}, {}, "models.known"),
    ({}, {"TUNINGD_MODELS_KNOWN": "m=1 x"}, "models.known"),
    ({}, {"TUNINGD_MODELS_UNKNOWN": "maybe"}, "models.unknown"),
    ({"limits": {"max_active": 0}}, {}, "limits.max_active"),
    ({"limits": {"max_active": True}}, {}, "limits.max_active"),
    ({"limits": {"per_location": {"us-central1": 0}}}, {}, "limits.per_location"),
    ({"limits": {"per_base_model": {"m": "1"}}}, {}, "limits.per_base_model"),
    ({"limits": {"requests_per_minute": 0}}, {}, "limits.requests_per_minute"),
    ({"limits": {"creates_per_minute": 1.5}}, {}, "limits.creates_per_minute"),
    ({"polling": {"initial_interval_s": 0}}, {}, "polling.initial_interval_s"),
    ({"polling": {"max_interval_s": 1}}, {}, "polling.max_interval_s"),
    ({"polling": {"multiplier": 0.5}}, {}, "polling.multiplier"),
    ({"polling": {"jitter": 1.5}}, {}, "polling.jitter"),
    ({"polling": {"quiet_max_s": 0}}, {}, "polling.quiet_max_s"),
    ({"reconcile": {"list_lag_s": -0.1}}, {}, "reconcile.list_lag_s"),
    ({"reconcile": {"absent_confirmations": 0}}, {}, "reconcile.absent_confirmations"),
    ({"sweep": {"interval_s": 0}}, {}, "sweep.interval_s"),
    ({"breaker": {"probe_initial_s": 60, "probe_max_s": 30}}, {}, "breaker.probe_max_s"),
    ({"breaker": {"probe_initial_s": 0}}, {}, "breaker.probe_initial_s"),
    ({"breaker": {"jitter": 1.5}}, {}, "breaker.jitter"),
    ({"sweep": {"cancel_unowned": "yes"}}, {}, "sweep.cancel_unowned"),
    ({"reconcile": {"confirm_spacing_s": -1}}, {}, "reconcile.confirm_spacing_s"),
    ({"reconcile": {"not_found_confirm_s": -1}}, {}, "reconcile.not_found_confirm_s"),
    ({"polling": {"batch_min_jobs": 0}}, {}, "polling.batch_min_jobs"),
    ({"polling": {"pending_max_interval_s": -1}}, {}, "polling.pending_max_interval_s"),
    ({"polling": {"batch_coalesce_s": -1}}, {}, "polling.batch_coalesce_s"),
    ({"scheduling": {"aging_interval_s": 0}}, {}, "scheduling.aging_interval_s"),
    ({"scheduling": {"max_aging_bonus": -1}}, {}, "scheduling.max_aging_bonus"),
    ({"retry": {"base_s": -1}}, {}, "retry.base_s"),
    ({"retry": {"cap_s": 1}}, {}, "retry.cap_s"),
    ({"logging": {"level": "loud"}}, {}, "logging.level"),
    ({"logging": {"format": "xml"}}, {}, "logging.format"),
    ({"emulator": {"enabled": "yes"}}, {}, "emulator.enabled"),
    ({"emulator": {"host": 1}}, {}, "emulator.host"),
    ({"emulator": {"port": -1}}, {}, "emulator.port"),
    ({"emulator": {"state_dir": 1}}, {}, "emulator.state_dir"),
    ({}, {"TUNINGD_LIMITS_MAX_ACTIVE": "two"}, "limits.max_active"),
    ({}, {"TUNINGD_LIMITS_MAX_ACTIVE": "0"}, "limits.max_active"),
    ({}, {"TUNINGD_POLLING_JITTER": "nan"}, "polling.jitter"),
    ({}, {"TUNINGD_LIMITS_PER_LOCATION": "us-central1:2"}, "limits.per_location"),
    ({}, {"TUNINGD_LIMITS_PER_LOCATION": "us-central1=x"}, "limits.per_location"),
    ({}, {"TUNINGD_EMULATOR_ENABLED": "maybe"}, "emulator.enabled"),
    ({"ha": {"lease_ttl_s": 0}}, {}, "ha.lease_ttl_s"),
    ({"ha": {"acquire_interval_s": 11}}, {}, "ha.acquire_interval_s"),
    ({"ha": {"fence_margin_s": 7}}, {}, "ha.fence_margin_s"),
    ({"ha": {"instance_id": 3}}, {}, "ha.instance_id"),
]


@pytest.mark.parametrize(("data", "env", "key"), BAD,
                         ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_validation_error_names_key(data: dict[str, Any], env: dict[str, str], key: str) -> None:
    """Every invalid value is refused with a ConfigError whose message names the key."""
    with pytest.raises(ConfigError) as info:
        settings_from(data, env)
    assert str(info.value).startswith(f"config key {key}")


def test_error_message_format() -> None:
    """The message says which key, the rule and the offending value."""
    expected = r"^config key limits\.max_active: must be an integer >= 1, got 0$"
    with pytest.raises(ConfigError, match=expected):
        settings_from({"limits": {"max_active": 0}}, {})
    with pytest.raises(ConfigError, match=r"\(from \$TUNINGD_LIMITS_MAX_ACTIVE\)"):
        settings_from({}, {"TUNINGD_LIMITS_MAX_ACTIVE": "0"})


def test_every_key_is_validated() -> None:
    """The BAD table covers every public key, so no key escapes validation tests."""
    covered = {b[2] for b in BAD}
    every = {f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in fields(cls)}  # type: ignore[arg-type]
    assert every == covered


@pytest.mark.parametrize(("data", "env", "key"), [
    ({"limits": {"max_activ": 2}}, {}, "limits.max_activ"),
    ({"limit": {"max_active": 2}}, {}, "limit"),
    ({"limits": 3}, {}, "limits"),
    ({}, {"TUNINGD_LIMITS_MAX_ACTIV": "2"}, "limits.max_activ"),
    ({}, {"TUNINGD_limits_max_active": "2"}, "limits.max_active"),
])
def test_unknown_keys_refused(data: dict[str, Any], env: dict[str, str], key: str) -> None:
    """Unknown sections and keys (typos), in the file or the environment, are errors."""
    with pytest.raises(ConfigError) as info:
        settings_from(data, env)
    assert str(info.value).startswith(f"config key {key}")


def test_lookup_order(tmp_path: Path) -> None:
    """Explicit path > $TUNINGD_CONFIG > $CONFIGURATION_DIRECTORY/tuningd.toml > defaults."""
    explicit = write(tmp_path / "explicit.toml", "[limits]\nmax_active = 2\n")
    from_env = write(tmp_path / "env.toml", "[limits]\nmax_active = 3\n")
    confdir = tmp_path / "etc"
    confdir.mkdir()
    write(confdir / "tuningd.toml", "[limits]\nmax_active = 4\n")
    env = {"TUNINGD_CONFIG": str(from_env), "CONFIGURATION_DIRECTORY": str(confdir)}

    assert load_settings(explicit, env=env).limits.max_active == 2
    assert load_settings(env=env).limits.max_active == 3
    assert load_settings(env={"CONFIGURATION_DIRECTORY": str(confdir)}).limits.max_active == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_config_file(None, {"CONFIGURATION_DIRECTORY": str(empty)}) is None
    assert load_settings(env={"CONFIGURATION_DIRECTORY": str(empty)}).limits.max_active == 1
    assert find_config_file(None, env) == from_env


def test_named_file_must_exist(tmp_path: Path) -> None:
    """A config file named explicitly or by $TUNINGD_CONFIG that is missing is an error."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(env={"TUNINGD_CONFIG": str(tmp_path / "nope.toml")})


def test_malformed_toml(tmp_path: Path) -> None:
    """A TOML syntax error names the file."""
    bad = write(tmp_path / "bad.toml", "[limits\nmax_active = 1\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        load_settings(bad, env={})


def test_env_beats_file(tmp_path: Path) -> None:
    """An environment variable overrides the same key in the file."""
    cfg = write(tmp_path / "t.toml", "[server]\nport = 1234\n")
    assert load_settings(cfg, env={"TUNINGD_SERVER_PORT": "4321"}).server.port == 4321


def test_as_dict_round_trips_through_settings_from() -> None:
    """The effective-settings dict is plain data and loads back to equal settings."""
    s = settings_from({"limits": {"per_location": {"us-central1": 2}},
                       "vertex": {"allowed_projects": ["p"]}}, {})
    d = s.as_dict()
    assert d["limits"]["per_location"] == {"us-central1": 2}
    assert d["vertex"]["allowed_projects"] == ["p"]
    assert settings_from(d, {}) == s
    assert set(d) == set(SECTIONS)
    assert json.loads(json.dumps(d)) == d


def test_settings_are_frozen_hashable_and_picklable() -> None:
    """Settings are immutable values that survive pickling (e.g. to a worker process)."""
    s = settings_from({"limits": {"per_location": {"a": 1}}}, {})
    with pytest.raises(AttributeError):
        s.limits.max_active = 3  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(s)) == s
    assert hash(s) == hash(pickle.loads(pickle.dumps(s)))


def test_direct_construction_is_validated() -> None:
    """Sections built in code are validated too, and plain dicts become immutable maps."""
    with pytest.raises(ConfigError, match=r"^config key limits\.max_active"):
        LimitsSettings(max_active=0)
    limits = LimitsSettings(per_location={"x": 2})
    assert isinstance(limits.per_location, FrozenMap)


def test_shipped_config_loads_and_equals_defaults() -> None:
    """config/tuningd.toml loads as it ships and equals the built-in defaults."""
    assert load_settings(SHIPPED_CONFIG, env={}) == Settings()
    env = {"STATE_DIRECTORY": "/var/lib/tuningd"}
    assert load_settings(SHIPPED_CONFIG, env=env) == load_settings(env=env)


def test_shipped_config_documents_every_key_with_its_default() -> None:
    """Uncommenting every `# key = value` line of config/tuningd.toml (and the `# [section.key]`
    tables with their `# "name" = value` lines) gives exactly the defaults."""
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    lines = text.splitlines()
    uncommented = [re.sub(r'^# (?=[a-z_]+ = |"[^"]+" = |\[[a-z_]+\.[a-z_]+\]$)', "", line)
                   for line in lines]
    data = tomllib.loads("\n".join(uncommented))
    every = {name: {f.name for f in fields(cls)} for name, cls in SECTIONS.items()}  # type: ignore[arg-type]
    assert {name: set(section) for name, section in data.items()} == every
    assert settings_from(data, {}) == Settings()
    # Each key (or table) has a one-line comment directly above it.
    for i, line in enumerate(lines):
        if re.match(r"^# ([a-z_]+ = |\[[a-z_]+\.[a-z_]+\]$)", line):
            above = lines[i - 1]
            assert above.startswith("# ") and not re.match(r"^# [a-z_]+ = ", above), line


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "tuningd.example.com",
                                  "[::]", "localhost.example.com"])
def test_non_loopback_host_needs_token_or_allow_insecure(host: str) -> None:
    """A host other machines can reach is refused without a token unless allow_insecure is set,
    and the message names the three ways out."""
    with pytest.raises(ConfigError) as info:
        settings_from({"server": {"host": host}}, {})
    message = str(info.value)
    assert message.startswith("config key server.host:")
    assert "server.token_file" in message and "server.allow_insecure = true" in message
    with_token = settings_from({"server": {"host": host, "token_file": "/etc/t"}}, {})
    assert with_token.server.host == host
    insecure = settings_from({"server": {"host": host, "allow_insecure": True}}, {})
    assert insecure.server.allow_insecure is True
    from_env = settings_from({}, {"TUNINGD_SERVER_HOST": host,
                                  "TUNINGD_SERVER_ALLOW_INSECURE": "true"})
    assert from_env.server.host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    """Loopback addresses and "localhost" are served without a token, as before."""
    assert settings_from({"server": {"host": host}}, {}).server.allow_insecure is False


@pytest.mark.parametrize(("url", "postgres", "sqlite_path"), [
    ("", False, "/data/x.db"),
    ("sqlite:///srv/jobs.db", False, "/srv/jobs.db"),
    ("postgresql://tuningd@db.example:5432/tuningd", True, None),
    ("postgres://db.example/tuningd", True, None),
])
def test_store_url_names_the_store(url: str, postgres: bool, sqlite_path: str | None) -> None:
    """store.url "" keeps the SQLite file at store.path; sqlite:// names another file and
    postgresql:// (or postgres://) a PostgreSQL database."""
    s = settings_from({"store": {"path": "/data/x.db", "url": url}}, {})
    assert config_values.is_postgres(s.store.url) is postgres
    if sqlite_path is not None:
        assert s.store.sqlite_path == sqlite_path and s.store.shown == (url or "/data/x.db")


def test_store_url_password_never_shown() -> None:
    """A password in store.url appears neither in `config` output nor in errors nor in `shown`."""
    env = {"TUNINGD_STORE_URL": "postgresql://tuningd:s3cret@db/tuningd?password=s3cret2"}
    s = settings_from({}, env)
    assert s.store.url == env["TUNINGD_STORE_URL"]
    shown = json.dumps(s.as_dict())
    assert "s3cret" not in shown and "postgresql://tuningd:***@db/tuningd?password=***" in shown
    assert "s3cret" not in s.store.shown
    with pytest.raises(ConfigError) as info:
        settings_from({"store": {"url": "mysql://root:hunter2@db/x"}}, {})
    assert "hunter2" not in str(info.value) and "mysql://root:***@db/x" in str(info.value)



def test_ha_defaults_take_over_within_15_s() -> None:
    """The [ha] defaults: a 10 s lease tried every 2 s, a renew every ttl/3, the fence at 8 s,
    and an instance id of the default given (hostname-pid) unless one is set."""
    ha = settings_from({}, {}).ha
    assert (ha.lease_ttl_s, ha.acquire_interval_s, ha.fence_after_s) == (10.0, 2.0, 8.0)
    assert ha.lease_ttl_s + ha.acquire_interval_s <= 15.0
    assert ha.holder("host-1") == "host-1"
    named = settings_from({"ha": {"instance_id": "node-a"}}, {}).ha
    assert named.holder("host-1") == "node-a"
