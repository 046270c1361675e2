"""The kinds of value a setting may have (type checks, rules, environment and TOML parsing), and
the store's places: its default file, which store a URL names, and that URL shown safely."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import field, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, get_type_hints

from tuningd.core.errors import ConfigError

V = TypeVar("V")

# The type hints settings use besides the scalars (bool, int, float, str).
STRINGS = tuple[str, ...]
INT_TABLE = Mapping[str, int]
# A table of name = list of integers (e.g. [models] known: model id = adapter sizes).
INT_LISTS = Mapping[str, tuple[int, ...]]


class FrozenMap(Mapping[str, V], Generic[V]):
    """An immutable, hashable, picklable str -> value mapping (TOML tables like per_location)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        self._items: dict[str, V] = dict(items)

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __getstate__(self) -> dict[str, V]:
        return self._items

    def __setstate__(self, state: dict[str, V]) -> None:
        self._items = dict(state)


def key(
    default: Any,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    positive: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field carrying its validation rules (checked by `rule_problem`)."""
    meta = {"min": min_value, "max": max_value, "positive": positive, "choices": choices}
    return field(default=default, metadata=meta)


def immutable(hint: Any, value: Any) -> Any:
    """Plain lists and dicts from Python callers as the immutable values settings hold."""
    if hint == STRINGS and isinstance(value, list):
        return tuple(value)
    if hint == INT_LISTS and isinstance(value, Mapping) and not (
            isinstance(value, FrozenMap)
            and all(isinstance(v, tuple) for v in value.values())):
        return FrozenMap({k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    if hint == INT_TABLE and isinstance(value, Mapping) and not isinstance(value, FrozenMap):
        return FrozenMap(value)
    return value


def _kind(hint: Any) -> str:
    if hint is bool:
        return "a boolean"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint == STRINGS:
        return "a list of strings"
    if hint == INT_LISTS:
        return "a table of name = list of integers"
    return "a table of name = integer"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def type_problem(hint: Any, value: Any) -> str | None:
    """Why `value` does not have the type `hint` (None if it does)."""
    ok: bool
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = _is_int(value)
    elif hint is float:
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value))
    elif hint is str:
        ok = isinstance(value, str)
    elif hint == STRINGS:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    elif hint == INT_LISTS:
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and k and isinstance(v, tuple) and all(_is_int(n) for n in v)
            for k, v in value.items()
        )
    else:
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and k and _is_int(v) for k, v in value.items()
        )
    return None if ok else f"must be {_kind(hint)}, got {value!r}"


def rule_problem(hint: Any, value: Any, meta: Mapping[str, Any]) -> str | None:
    """Why a well-typed `value` breaks its field's rules (None if it does not)."""
    choices: tuple[str, ...] | None = meta.get("choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(choices)}; got {value!r}"
    if hint == INT_TABLE:
        what, numbers = "integers", [(f"{k} = ", v) for k, v in value.items()]
    elif hint is int or hint is float:
        what, numbers = ("an integer" if hint is int else "a number"), [("", value)]
    else:
        return None
    low, high, positive = meta.get("min"), meta.get("max"), meta.get("positive")
    if positive:
        rule = "> 0"
    elif low is not None and high is not None:
        rule = f"between {low:g} and {high:g}"
    elif low is not None:
        rule = f">= {low:g}"
    else:
        return None
    for where, number in numbers:
        if ((positive and number <= 0) or (low is not None and number < low)
                or (high is not None and number > high)):
            return f"must be {what} {rule}, got {where}{number!r}"
    return None


def parse_env(hint: Any, raw: str) -> Any:
    """Parse an environment variable's text as the type `hint`; ValueError when it cannot."""
    text = raw.strip()
    if hint is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be a boolean (true/false, 1/0, yes/no, on/off)")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("must be a number") from None
    if hint is str:
        return raw
    if hint == STRINGS:
        return tuple(item.strip() for item in text.split(",")) if text else ()
    lists = hint == INT_LISTS
    table: dict[str, Any] = {}
    for item in text.split(",") if text else []:
        name, sep, number = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            table[name.strip()] = (tuple(int(n) for n in number.split()) if lists
                                   else int(number.strip()))
        except ValueError:
            example = ("gemini-2.5-flash=1 2 4 8 16,gemini-2.5-pro=1 2 4 8" if lists
                       else "us-central1=2,europe-west4=1")
            what = "name=integers (space-separated)" if lists else "name=integer"
            raise ValueError(
                f"must be a table written as {what} pairs separated by commas (e.g. {example})"
            ) from None
    return table


def from_toml(hint: Any, value: Any) -> Any:
    """Normalize a TOML value for `hint` (ints may stand for floats; arrays become tuples)."""
    if hint is float and _is_int(value):
        return float(value)
    if hint == STRINGS and isinstance(value, list):
        return tuple(value)
    if hint == INT_LISTS and isinstance(value, Mapping):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


def plain(value: Any) -> Any:
    """A setting's value as plain TOML/JSON data (tuples as lists, maps as dicts)."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


# ----- [store]: the default SQLite file, which store a URL names, and how to show it

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


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a settings class (cached)."""
    if cls not in _HINTS_CACHE:
        _HINTS_CACHE[cls] = get_type_hints(cls)
    return _HINTS_CACHE[cls]


class Section:
    """Base of every settings section: validates its fields on construction, whatever the source."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        types = hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            # Accept plain lists/dicts from Python callers but store immutable values.
            object.__setattr__(self, f.name, immutable(types[f.name], getattr(self, f.name)))
            problem = type_problem(types[f.name], getattr(self, f.name))
            if problem is None:
                problem = rule_problem(types[f.name], getattr(self, f.name), f.metadata)
            if problem is not None:
                raise ConfigError(f"config key {self.section}.{f.name}: {problem}")
        self._cross_check()

    def _cross_check(self) -> None:
        """Rules that relate several keys of the section (none by default)."""
