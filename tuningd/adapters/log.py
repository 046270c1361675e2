"""structlog setup: JSON lines or console output, ISO timestamps, and secret redaction."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
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
        else structlog.dev.ConsoleRenderer(colors=_isatty(out))
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
