"""PostgreSQL failures in plain words (errors.StoreError, HTTP 503), and URLs without passwords."""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from tuningd.core import errors

__all__ = ["FAILURES", "Conn", "redact", "scrub", "store_error"]

# What a call on a pool or connection raises when the server, the network or the pool fails.
# InternalClientError too: asyncpg raises it for a pooled connection whose server session was
# ended (pg_terminate_backend, a server restart) while the pool still held it.
FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
            OSError, TimeoutError)

# A connection of its own or one lent by the pool: the queries take either.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def _without_password(parts: SplitResult) -> SplitResult:
    if parts.password is None:
        return parts
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}")


def redact(url: str) -> str:
    """`url` with its password (if any) replaced by ***, for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable database URL>"
    cleaned = _without_password(parts)
    # A password may also come as a query parameter (?password=...).
    if "password=" in cleaned.query:
        query = "&".join("password=***" if q.startswith("password=") else q
                         for q in cleaned.query.split("&"))
        cleaned = cleaned._replace(query=query)
    return urlunsplit(cleaned)


def scrub(text: str, url: str) -> str:
    """`text` with every occurrence of `url`'s password replaced by ***."""
    try:
        parts = urlsplit(url)
        secrets = [parts.password] if parts.password else []
        secrets += [unquote(q.partition("=")[2]) for q in parts.query.split("&")
                    if q.startswith("password=")]
    except ValueError:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def store_error(exc: BaseException, *, writing: bool, url: str) -> errors.StoreError:
    """The StoreError that tells a client why a PostgreSQL call failed; `exc` is its cause."""
    sqlstate = getattr(exc, "sqlstate", None)
    what = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        what = "PostgreSQL did not answer in time"
    elif isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        what = f"the connection to PostgreSQL failed ({what})"
    elif isinstance(sqlstate, str):
        what = f"PostgreSQL error {sqlstate}: {what}"
    err = errors.StoreError(
        f"the job store cannot be {'written' if writing else 'read'}: {scrub(what, url)}",
        writing=writing)
    err.__cause__ = exc
    return err
