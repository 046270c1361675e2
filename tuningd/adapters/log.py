"""structlog setup: JSON lines or short console lines, ISO timestamps, and secret redaction."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

Format = Literal["auto", "json", "console"]

REDACTED = "[redacted]"

# Key names that hold secrets, matched after lowercasing and dropping '-' and '_'.
_SECRET_KEY_PARTS = (
    "authorization",
    "token",
    "assertion",
    "privatekey",
    "password",
    "passwd",
    "secret",
    "apikey",
    "credential",
    "cookie",
)
# Values that carry a credential whatever their key: bearer tokens, PEM keys, OAuth tokens.
_SECRET_VALUE = re.compile(
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\bya29\.[A-Za-z0-9._-]+"
)
# Values that can hold no text: never scrubbed.
_PLAIN_TYPES = frozenset({int, float, bool, type(None)})


# Keys that merely describe a secret (token counts, key file paths) stay readable.
_HARMLESS_SUFFIXES = (
    "count",
    "counts",
    "limit",
    "type",
    "expiry",
    "expiresin",
    "file",
    "path",
    "dir",
)


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    norm = key.lower().replace("_", "").replace("-", "")
    if norm.endswith(_HARMLESS_SUFFIXES):
        return False
    return any(part in norm for part in _SECRET_KEY_PARTS)


def _scrub_str(value: str) -> str:
    # Each branch of _SECRET_VALUE needs "bearer", "basic", "private key" or "ya29." (in any
    # case) in the text: without them the regex cannot match. Exact for ASCII text only: under
    # (?i) the regex also folds some non-ASCII letters ("ſ" ~ "s", the Kelvin sign ~ "k"), so
    # other text always goes through the regex.
    if value.isascii():
        low = value.lower()
        if not ("bearer" in low or "basic" in low or "private key" in low or "ya29." in low):
            return value
    return _SECRET_VALUE.sub(REDACTED, value)


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return value
    kind = type(value)
    if kind is str:
        return _scrub_str(value)
    if kind in _PLAIN_TYPES:
        return value
    if isinstance(value, str):
        # str subclasses (StrEnum members...) come out as plain str, as re.sub makes them.
        return _SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, bytes):
        return _scrub(value.decode("utf-8", "replace"), depth + 1)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, tuple):
        # Keep tuples: PositionalArgumentsFormatter needs `positional_args` as one for `%`.
        return tuple(_scrub(v, depth + 1) for v in value)
    if isinstance(value, list | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: secret-named keys and credential-looking values become [redacted]."""
    for key, value in list(event_dict.items()):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        elif type(value) in _PLAIN_TYPES:
            continue
        else:
            event_dict[key] = _scrub(value)
    return event_dict


# The console line: what a person scanning a terminal needs; JSON keeps every key.
_CONSOLE_OMIT = frozenset({"timestamp", "level", "logger", "event", "job_id", "from_state",
                           "to_state", "reason", "exception", "remote_name", "remote_json"})
# Values worth reading whole (the fix for a problem); others are cut at _CONSOLE_VALUE_CHARS.
_CONSOLE_WHOLE = frozenset({"error", "fix", "hint"})
_CONSOLE_VALUE_CHARS = 60
_LEVEL_LABELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR",
                 "critical": "CRIT", "exception": "ERROR"}
_LEVEL_COLORS = {"WARN": "\x1b[33m", "ERROR": "\x1b[31m", "CRIT": "\x1b[31;1m",
                 "DEBUG": "\x1b[2m"}
_RESET = "\x1b[0m"
JOB_ID_CHARS = 8
# Vertex's enum prefixes say nothing a person needs on a terminal (RUNNING, TUNING...).
_ENUM_PREFIX = re.compile(r"\b(?:TUNING_)?JOB_STATE_")


def _console_value(key: str, value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    else:
        text = json.dumps(value, default=str)
    text = _ENUM_PREFIX.sub("", text)
    if key not in _CONSOLE_WHOLE and len(text) > _CONSOLE_VALUE_CHARS:
        text = text[:_CONSOLE_VALUE_CHARS - 1] + "…"
    if not text or any(c.isspace() for c in text):
        text = json.dumps(text, ensure_ascii=False)
    return text


def _same_time(value: Any, stamp: str) -> bool:
    """Whether an ISO time is within a second of the line's timestamp."""
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        own = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return abs((at - own).total_seconds()) < 1.0
    except (TypeError, ValueError):
        return False


class ShortConsoleRenderer:
    """One short line per event: time, level, event, the job's short id, a transition's
    from->to and reason, then the other keys as key=value (long values cut, the fix whole).

    A typical job transition stays well under 120 characters; a traceback follows its line."""

    def __init__(self, colors: bool = False) -> None:
        self._colors = colors

    def __call__(self, _logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        stamp = str(event_dict.get("timestamp", ""))
        clock = stamp[11:19] if len(stamp) >= 19 else stamp
        level = _LEVEL_LABELS.get(str(event_dict.get("level", method)), method.upper())
        shown_level = f"{level:<5}"
        if self._colors and level in _LEVEL_COLORS:
            shown_level = f"{_LEVEL_COLORS[level]}{shown_level}{_RESET}"
        event = str(event_dict.get("event", ""))
        parts = [clock, shown_level, f"\x1b[1m{event}{_RESET}" if self._colors else event]
        job_id, remote_id = event_dict.get("job_id"), event_dict.get("remote_id")
        omit = set(_CONSOLE_OMIT)
        if job_id:
            parts.append(str(job_id)[:JOB_ID_CHARS])
        elif remote_id:  # the emulator's lines: Vertex's id is the job's name there
            parts.append(str(remote_id))
            omit.add("remote_id")
        before, after = event_dict.get("from_state"), event_dict.get("to_state")
        if after is not None:
            # The transition and its reason say the remote state; a sub-state joins the arrow.
            omit.update({"remote_state", "tuning_job_state", "remote_substate"})
            sub = event_dict.get("tuning_job_state") or event_dict.get("remote_substate")
            arrow = f"{before}->{after}" if before is not None else f"->{after}"
            parts.append(_ENUM_PREFIX.sub("", arrow + (f"/{sub}" if sub else "")))
        reason = event_dict.get("reason")
        if reason:
            parts.append(_console_value("error", reason))
        for key, value in event_dict.items():
            if key in omit or value is None:
                continue
            if key == "at" and _same_time(value, stamp):
                continue  # the emulator's clock time, when it is the line's own time
            parts.append(f"{key}={_console_value(key, value)}")
        line = " ".join(p for p in parts if p)
        exception = event_dict.get("exception")
        return f"{line}\n{exception}" if exception else line


def _drop_color_message(
    _logger: WrappedLogger, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # aiohttp/uvicorn-style duplicate message keys only add noise to JSON lines.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    level: str = "info", fmt: Format = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger to write to `stream` (stderr by default).

    `fmt="auto"` renders JSON lines unless the stream is a TTY. Under systemd stderr goes to
    the journal, which is not a TTY, so the service logs JSON.
    """
    out = sys.stderr if stream is None else stream
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level: {level!r}")
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(out))
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format: {fmt!r}")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else ShortConsoleRenderer(colors=_isatty(out))
    )
    # Tracebacks and %-style arguments become text only here, so redact once more after them.
    final: list[Processor] = [
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiohttp's access log duplicates our own API request logging and metrics.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every call on its thread at debug, with the SQL and its parameters: the
    # store's own events say what matters, without job data.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def enabled_for(logger_name: str, level: int) -> bool:
    """Whether an event at `level` (logging.DEBUG, ...) on `logger_name` would be written.

    For per-request lines on hot paths: a dropped structlog event still costs a bound logger and
    a trip into the processor chain (~20 µs), this check well under 1 µs. False only when the
    configured chain starts with filter_by_level (configure_logging's) and the stdlib logger is
    above `level`; under another chain (structlog.testing.capture_logs, say) always True."""
    stdlib = _stdlib_loggers.get(logger_name)
    if stdlib is None:  # getLogger takes the logging module's lock: looked up once per name
        stdlib = _stdlib_loggers[logger_name] = logging.getLogger(logger_name)
    if stdlib.isEnabledFor(level):
        return True
    processors = structlog.get_config()["processors"]
    return not processors or processors[0] is not structlog.stdlib.filter_by_level


_stdlib_loggers: dict[str, logging.Logger] = {}
