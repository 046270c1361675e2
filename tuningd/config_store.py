"""The [store] section's places: the default SQLite file, which store a URL names, whether it
is sound, and how to show it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULT_STORE_PATH", "POSTGRES_SCHEMES", "SQLITE_SCHEME", "default_store_path",
           "is_postgres", "redact_url", "sqlite_path",
           "url_problem"]

DB_FILE_NAME = "tuningd.db"
DEFAULT_STORE_PATH = "./tuningd.db"
SQLITE_SCHEME = "sqlite://"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    """True when `url` names a PostgreSQL database."""
    return url.startswith(POSTGRES_SCHEMES)


def sqlite_path(url: str, path: str) -> str:
    """The SQLite file: the one a sqlite:// `url` names, else `path` (for url "")."""
    return url[len(SQLITE_SCHEME):] if url.startswith(SQLITE_SCHEME) else path


def url_problem(url: str) -> str | None:
    """What is wrong with a store.url value, or None ("" is sound: SQLite at store.path)."""
    if not url:
        return None
    if url.startswith(SQLITE_SCHEME):
        if not url[len(SQLITE_SCHEME):]:
            return "sqlite:// needs a file, as in sqlite:///var/lib/tuningd/tuningd.db"
        return None
    if is_postgres(url):
        if not url.partition("://")[2].strip("/"):
            return ("a PostgreSQL URL needs a host or a database, as in "
                    "postgresql://tuningd@db.example/tuningd")
        return None
    return (f"{redact_url(url)!r} names no store tuningd knows; use \"\" (the SQLite file at "
            "store.path), sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE")


def redact_url(url: str) -> str:
    """A URL fit for logs and messages: its password, in the authority or as a `password=` query
    parameter, replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:***@{host}"
    path, question, query = tail.partition("?")
    if question:
        query = "&".join("password=***" if part.startswith("password=") else part
                         for part in query.split("&"))
    return f"{scheme}{sep}{authority}{slash}{path}{question}{query}"


def default_store_path(env: Mapping[str, str]) -> str:
    """`$STATE_DIRECTORY/tuningd.db` under systemd's StateDirectory=, else `./tuningd.db`."""
    # systemd joins several StateDirectory= entries with ':'; the first is ours.
    state_dir = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return str(Path(state_dir) / DB_FILE_NAME)
    return DEFAULT_STORE_PATH
