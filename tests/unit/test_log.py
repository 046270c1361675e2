"""Logging setup: JSON vs console output, ISO timestamps, and secrets never reaching the stream."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from tuningd.adapters.log import REDACTED, configure_logging, enabled_for, is_secret_key
from tuningd.core.model import LocalState


class TTYStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_auto_is_json_lines_on_a_non_tty_with_iso_timestamp() -> None:
    """In auto format a non-TTY stream gets one JSON object per event with its fields, level, logger
    name and a timezone-aware ISO timestamp."""
    buf = io.StringIO()
    configure_logging("info", "auto", buf)
    structlog.get_logger("tuningd.test").info("job accepted", job_id="j1", priority=3)
    [rec] = lines(buf)
    assert rec["event"] == "job accepted"
    assert rec["job_id"] == "j1" and rec["priority"] == 3
    assert rec["level"] == "info"
    assert rec["logger"] == "tuningd.test"
    ts = datetime.fromisoformat(str(rec["timestamp"]).replace("Z", "+00:00"))
    assert ts.tzinfo is not None


def test_auto_is_console_on_a_tty() -> None:
    """In auto format a TTY stream gets coloured, human-readable console lines rather than JSON."""
    buf = TTYStringIO()
    configure_logging("info", "auto", buf)
    structlog.get_logger().info("hello", n=1)
    out = buf.getvalue()
    assert "\x1b[" in out  # coloured for a human
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "hello" in plain and "n=1" in plain
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_json_forced_on_a_tty_and_console_forced_off_one() -> None:
    """An explicit json format wins on a TTY, and an explicit console format on a non-TTY writes
    readable lines without colour codes."""
    tty = TTYStringIO()
    configure_logging("info", "json", tty)
    structlog.get_logger().info("x")
    assert lines(tty)[0]["event"] == "x"
    plain = io.StringIO()
    configure_logging("info", "console", plain)
    structlog.get_logger().info("readable", k="v")
    assert "readable" in plain.getvalue() and "k=v" in plain.getvalue()
    assert "\x1b[" not in plain.getvalue()  # no colour codes when not a TTY


def test_level_filters_and_stdlib_records_are_rendered_too() -> None:
    """Events below the configured level are dropped, and stdlib logging records are
    rendered like structlog events."""
    buf = io.StringIO()
    configure_logging("warning", "json", buf)
    structlog.get_logger().info("dropped")
    logging.getLogger("aiohttp.client").warning("from %s", "stdlib")
    [rec] = lines(buf)
    assert rec["event"] == "from stdlib"
    assert rec["level"] == "warning"


def test_bad_level_and_format_are_rejected() -> None:
    """An unknown log level or log format raises ValueError."""
    with pytest.raises(ValueError):
        configure_logging("loud", "json", io.StringIO())
    with pytest.raises(ValueError):
        configure_logging("info", "xml", io.StringIO())  # type: ignore[arg-type]


SECRET = "s3cr3t-VALUE-abcdef123456"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_are_redacted_everywhere(fmt: str) -> None:
    """No secret reaches the stream in either format, whether in secret keys, headers, nested data,
    free text, stdlib records or tracebacks, while other values survive."""
    buf = io.StringIO()
    configure_logging("debug", fmt, buf)  # type: ignore[arg-type]
    log = structlog.get_logger()
    log.info(
        "request",
        authorization=f"Bearer {SECRET}",
        access_token=SECRET,
        token=SECRET,
        assertion=SECRET,
        private_key=SECRET,
        password=SECRET,
        client_secret=SECRET,
        headers={"Authorization": f"Bearer {SECRET}", "X-Ok": "fine"},
        nested=[{"refresh_token": SECRET}],
        note=f"sent header Bearer {SECRET} upstream",
    )
    log.info("positional %s", f"Bearer {SECRET}")
    logging.getLogger("aiohttp.client").info("stdlib Authorization: Bearer %s", SECRET)
    try:
        raise RuntimeError(f"refresh failed for Bearer {SECRET}")
    except RuntimeError:
        log.exception("boom")
    out = buf.getvalue()
    assert SECRET not in out
    assert REDACTED in out
    assert "fine" in out  # non-secret values survive
    assert "boom" in out and "RuntimeError" in out


def test_private_key_pem_and_google_access_token_values_are_redacted() -> None:
    """A PEM private key or a ya29 Google access token is redacted even under a
    key name that is not secret."""
    buf = io.StringIO()
    configure_logging("info", "json", buf)
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    structlog.get_logger().info("loaded", blob=pem, header="ya29.a0AfH6SMBxyz123")
    out = buf.getvalue()
    assert "BEGIN PRIVATE KEY" not in out
    assert "ya29.a0AfH6SMBxyz123" not in out


def test_key_classification() -> None:
    """is_secret_key flags credential key names in any case or separator and leaves look-alikes such
    as token_type or total_billable_token_count alone."""
    for key in ("Authorization", "access_token", "id-token", "private_key", "PASSWORD", "secret"):
        assert is_secret_key(key), key
    for key in ("total_billable_token_count", "credentials_file", "token_type", "state", "job"):
        assert not is_secret_key(key), key


def test_fast_paths_redact_exactly_what_the_value_regex_does() -> None:
    """The cheap pre-check before the value regex changes no result: any case, non-ASCII text
    that (?i) folds to the markers, scalars and str subclasses kept as the regex leaves them."""
    from tuningd.adapters.log import _SECRET_VALUE, redact_secrets

    values = [
        "plain text", "", "BEARER abcdefgh1", "bearer\tabcdefgh1", "Basic dXNlcjpwYXNz",
        "basic short", "authorization: Bearer abc.def-ghi_jkl", "token ya29.a0AfH6S", "YA29.X",
        "-----BEGIN RSA PRIVATE KEY-----", "-----begin private key-----", "privatekey",
        "ba\u017fic abcdefghij",  # long s: (?i) folds it to "s"
        "bearer \u212aelvin12345", "caf\u00e9 Bearer abcdefgh12", "ya29\u3002nope",
    ]
    for value in values:
        expected = _SECRET_VALUE.sub(REDACTED, value)
        got = redact_secrets(None, "info", {"msg": value, "nested": {"v": [value]}})
        assert got["msg"] == expected, value
        assert got["nested"] == {"v": [expected]}, value
    assert redact_secrets(None, "info", {"msg": "ba\u017fic abcdefghij"})["msg"] == REDACTED
    scalars = {"n": 3, "f": 1.5, "b": True, "none": None, "token_count": 7}
    assert redact_secrets(None, "info", dict(scalars)) == scalars
    assert redact_secrets(None, "info", {"api_token": 12})["api_token"] == REDACTED
    state = redact_secrets(None, "info", {"state": LocalState.QUEUED})["state"]
    assert state == "queued" and type(state) is str
    # The key cache answers as before, repeatedly.
    for _ in range(3):
        assert is_secret_key("Authorization") and not is_secret_key("token_type")


def test_console_job_transition_is_one_short_line_and_json_keeps_every_key() -> None:
    """A typical job transition renders on a terminal as one line well under 120 characters
    (time, level, event, short job id, from->to, reason), while JSON keeps every key whole."""
    fields = {"from_state": "pending", "to_state": "running",
              "reason": "observed: remote JOB_STATE_RUNNING/TUNING_JOB_STATE_TUNING",
              "remote_name": "projects/123456789012/locations/us-central1/tuningJobs/"
                             "4982013113894174720",
              "remote_state": "JOB_STATE_RUNNING"}
    job_id = "7f3c2a9e-0b1d-4c55-9a53-2f1e0c6d8b11"
    console = io.StringIO()
    configure_logging("info", "console", console)
    structlog.get_logger("tuningd.service.engine").bind(job_id=job_id).info("job.transition",
                                                                            **fields)
    [line] = console.getvalue().splitlines()
    assert len(line) < 100, line
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO  job\.transition 7f3c2a9e pending->running "
                        r'"observed: remote RUNNING/TUNING"', line), line
    piped = io.StringIO()
    configure_logging("info", "auto", piped)
    structlog.get_logger("tuningd.service.engine").bind(job_id=job_id).info("job.transition",
                                                                            **fields)
    [rec] = lines(piped)
    assert rec["job_id"] == job_id and {k: rec[k] for k in fields} == fields


def test_console_keeps_a_fix_whole_and_cuts_other_long_values() -> None:
    """A warning's `fix` is shown whole on the console; other long values are cut short."""
    buf = io.StringIO()
    configure_logging("info", "console", buf)
    fix = "run `gcloud auth application-default login`, or set vertex.credentials_file " * 2
    structlog.get_logger().warning("vertex.credentials_missing", fix=fix, body="x" * 500)
    [line] = buf.getvalue().splitlines()
    assert " WARN  vertex.credentials_missing " in line
    assert fix.strip() in line and "x" * 100 not in line


def test_console_emulator_transition_names_the_remote_job_and_joins_the_substate() -> None:
    """An emulator transition shows Vertex's id up front and the sub-state on the arrow, and
    leaves out its clock time when that is the line's own; JSON keeps them as keys."""
    fields = {"remote_id": "7540353937246927516", "location": "us-central1",
              "from_state": "JOB_STATE_RUNNING", "to_state": "JOB_STATE_RUNNING",
              "tuning_job_state": "TUNING_JOB_STATE_TUNING", "reason": "capacity acquired"}
    buf = io.StringIO()
    configure_logging("info", "console", buf)
    log = structlog.get_logger("tuningd.emulator")
    log.info("emulated_job.transitioned", **fields,
             at=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    [line] = buf.getvalue().splitlines()
    assert line.endswith(' emulated_job.transitioned 7540353937246927516 RUNNING->RUNNING/TUNING '
                         '"capacity acquired" location=us-central1'), line
    piped = io.StringIO()
    configure_logging("info", "json", piped)
    log.info("emulated_job.transitioned", **fields, at="2026-01-01T00:00:00Z")
    [rec] = lines(piped)
    assert {k: rec[k] for k in fields} == fields and rec["at"] == "2026-01-01T00:00:00Z"


def test_enabled_for_follows_the_level_and_yields_to_capture_logs() -> None:
    """enabled_for says a debug line at level info would be dropped (so hot paths skip it), an
    info line kept, and a debug line kept under capture_logs, which keeps every level."""
    configure_logging("info", "json", stream=io.StringIO())
    assert not enabled_for("tuningd.http.api", logging.DEBUG)
    assert enabled_for("tuningd.http.api", logging.INFO)
    with structlog.testing.capture_logs():
        assert enabled_for("tuningd.http.api", logging.DEBUG)
    configure_logging("debug", "json", stream=io.StringIO())
    assert enabled_for("tuningd.http.api", logging.DEBUG)
