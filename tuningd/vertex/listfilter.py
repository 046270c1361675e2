"""AIP-160 list filters on canonical TuningJobs (spec §1), and what a store's indexes can answer."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuningd.core.errors import InvalidArgument
from tuningd.vertex.schema import schema
from tuningd.vertex.wire_json import ts_to_micros

__all__ = ["JOB_STATE_NUMBERS", "MAX_FILTER_DEPTH", "ListFilter", "compile_filter",
           "parse_list_filter"]

JOB_STATE_NUMBERS: Mapping[str, int] = dict(schema("v1").enums["JobState"].numbers)

Predicate = Callable[[Mapping[str, Any]], bool]

_COMPARATORS = ("<=", ">=", "!=", "=", "<", ">", ":")
_WORD_STOP = set(" \t\r\n()=<>!:\"'")
_DISPLAY_FIELDS = {"display_name": "tunedModelDisplayName",
                   "displayName": "tunedModelDisplayName",
                   "tuned_model_display_name": "tunedModelDisplayName",
                   "tunedModelDisplayName": "tunedModelDisplayName"}
_TIME_FIELDS = {"create_time": "createTime", "createTime": "createTime",
                "update_time": "updateTime", "updateTime": "updateTime",
                "start_time": "startTime", "startTime": "startTime",
                "end_time": "endTime", "endTime": "endTime"}
_STATE_FIELDS = ("state",)
_TIME_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class _Tok:
    kind: str  # "(" ")" "cmp" "word" "str" "AND" "OR" "NOT" "-" "eof"
    text: str
    pos: int


def _filter_error(detail: str) -> InvalidArgument:
    return InvalidArgument(f"Invalid filter: {detail}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        prev = toks[-1].kind if toks else ""
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(_Tok(c, c, i))
            i += 1
        elif c in "=<>!:":
            op = next((o for o in _COMPARATORS if text.startswith(o, i)), None)
            if op is None:
                raise _filter_error(f"unexpected character '{c}' at position {i}.")
            toks.append(_Tok("cmp", op, i))
            i += len(op)
        elif c in "\"'":
            start, i, buf = i, i + 1, []
            while True:
                if i >= n:
                    raise _filter_error(f"unterminated string starting at position {start}.")
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                    i += 2
                elif ch == c:
                    i += 1
                    break
                else:
                    buf.append(ch)
                    i += 1
            toks.append(_Tok("str", "".join(buf), start))
        elif c == "-" and prev != "cmp":
            toks.append(_Tok("-", "-", i))
            i += 1
        else:
            start = i
            # A value right after a comparator may hold ':' (unquoted RFC 3339 timestamps).
            stop = _WORD_STOP - {":"} if prev == "cmp" else _WORD_STOP
            while i < n and text[i] not in stop:
                i += 1
            word = text[start:i]
            kind = word if word in ("AND", "OR", "NOT") else "word"
            toks.append(_Tok(kind, word, start))
    toks.append(_Tok("eof", "", n))
    return toks


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.DOTALL)


def _enum_value_name(value: Any, numbers: Mapping[str, int]) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return next((k for k, v in numbers.items() if v == value), None)
    return None


def _state_name(value: str) -> str:
    """A `state` filter value (name in any case, or its number) -> the JobState name."""
    name = value.upper()
    # isdigit() alone also takes "²" (int() refuses it) and 5,000-digit strings (int() refuses
    # those too); a JobState number has at most two digits.
    if name.isascii() and name.isdigit() and len(name) <= 9:
        name = _enum_value_name(int(name), JOB_STATE_NUMBERS) or name
    if name not in JOB_STATE_NUMBERS:
        raise _filter_error(f"unknown state value '{value}'.")
    return name


@dataclass(frozen=True)
class _Cond:
    """An index-answerable restriction: ("state", "", JobState name) or ("label", key, value)."""

    kind: str
    key: str
    value: str


def _pushable(field: str, op: str, value: str) -> _Cond | None:
    """The index form of one restriction (already validated by _restriction), if it has one.
    Only equality: `!=` and `:` (presence, wildcards) are left to the predicate."""
    if op != "=":
        return None
    if field.startswith("labels.") and field != "labels.":
        return _Cond("label", field[len("labels."):], value)
    if field in _STATE_FIELDS:
        return _Cond("state", "", _state_name(value))
    return None


def _restriction(field: str, op: str, value: str, tok: _Tok) -> Predicate:
    if field == "labels" or field.startswith("labels."):
        key = field[len("labels."):] if field != "labels" else None
        if key == "":
            raise _filter_error(f"empty label key in '{field}'.")
        if key is None:
            if op != ":":
                raise _filter_error(f"operator '{op}' is not supported for 'labels'.")
            return lambda job: value in (job.get("labels") or {})
        if op == ":":
            if value == "*":
                return lambda job: key in (job.get("labels") or {})
            rx = _glob(value)
            return lambda job: (key in (job.get("labels") or {})
                                and rx.fullmatch(str(job["labels"][key])) is not None)
        if op == "=":
            return lambda job: (job.get("labels") or {}).get(key) == value
        if op == "!=":
            return lambda job: (job.get("labels") or {}).get(key) != value
        raise _filter_error(f"operator '{op}' is not supported for '{field}'.")
    if field in _STATE_FIELDS:
        name = _state_name(value)
        if op == "=":
            return lambda job: _enum_value_name(job.get("state"), JOB_STATE_NUMBERS) == name
        if op == "!=":
            return lambda job: _enum_value_name(job.get("state"), JOB_STATE_NUMBERS) != name
        raise _filter_error(f"operator '{op}' is not supported for 'state'.")
    if field in _DISPLAY_FIELDS:
        attr = _DISPLAY_FIELDS[field]
        if op == "=":
            return lambda job: (job.get(attr) or "") == value
        if op == "!=":
            return lambda job: (job.get(attr) or "") != value
        if op == ":":
            rx = _glob(value)
            return lambda job: rx.fullmatch(job.get(attr) or "") is not None
        raise _filter_error(f"operator '{op}' is not supported for '{field}'.")
    if field in _TIME_FIELDS:
        attr = _TIME_FIELDS[field]
        bound = ts_to_micros(value)
        if bound is None:
            raise _filter_error(f"invalid timestamp '{value}' for '{field}' (expected RFC 3339, "
                                'e.g. "2021-05-18T00:00:00Z").')
        if op not in _TIME_OPS:
            raise _filter_error(f"operator '{op}' is not supported for '{field}'.")
        cmp = _TIME_OPS[op]

        def time_pred(job: Mapping[str, Any]) -> bool:
            raw = job.get(attr)
            micros = ts_to_micros(raw) if isinstance(raw, str) else None
            if micros is None:
                return op == "!="
            return cmp(micros, bound)

        return time_pred
    raise _filter_error(f"unsupported field '{field}' at position {tok.pos}. Supported: "
                        "labels.<key>, state, display_name, create_time.")


MAX_FILTER_DEPTH = 32


class _FilterParser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def unexpected(self, tok: _Tok) -> InvalidArgument:
        if tok.kind == "eof":
            return _filter_error("unexpected end of filter.")
        return _filter_error(f"unexpected token '{tok.text}' at position {tok.pos}.")

    def parse(self) -> tuple[Predicate, list[_Cond]]:
        """The predicate of the whole filter and its necessary index-answerable conditions."""
        if self.peek().kind == "eof":
            return (lambda job: True), []
        pred, conds = self.expression()
        if self.peek().kind != "eof":
            raise self.unexpected(self.peek())
        return pred, conds

    # AIP-160: expression = sequence {AND sequence}; sequence = factor {factor};
    # factor = term {OR term}. So OR binds tighter than AND and juxtaposition.
    # Each method also returns the conditions every matching job must meet: the union of its
    # conjuncts' conditions; none from an OR of several terms or from under NOT.
    def expression(self) -> tuple[Predicate, list[_Cond]]:
        pred, conds = self.sequence()
        preds = [pred]
        while self.peek().kind == "AND":
            self.take()
            pred, more = self.sequence()
            preds.append(pred)
            conds += more
        return _all(preds), conds

    def sequence(self) -> tuple[Predicate, list[_Cond]]:
        pred, conds = self.factor()
        preds = [pred]
        while self.peek().kind in ("word", "str", "(", "NOT", "-"):
            pred, more = self.factor()
            preds.append(pred)
            conds += more
        return _all(preds), conds

    def factor(self) -> tuple[Predicate, list[_Cond]]:
        first, conds = self.term()
        preds = [first]
        while self.peek().kind == "OR":
            self.take()
            preds.append(self.term()[0])
        if len(preds) == 1:
            return first, conds
        return (lambda job: any(p(job) for p in preds)), []

    def term(self) -> tuple[Predicate, list[_Cond]]:
        if self.peek().kind in ("NOT", "-"):
            self.take()
            inner = self.simple()[0]
            return (lambda job: not inner(job)), []
        return self.simple()

    def simple(self) -> tuple[Predicate, list[_Cond]]:
        tok = self.take()
        if tok.kind == "(":
            # An explicit bound: neither parsing nor evaluating may hit the recursion limit.
            self.depth += 1
            if self.depth > MAX_FILTER_DEPTH:
                raise _filter_error(
                    f"filter is nested too deeply (at most {MAX_FILTER_DEPTH} parentheses).")
            pred, conds = self.expression()
            self.depth -= 1
            close = self.take()
            if close.kind != ")":
                raise self.unexpected(close)
            return pred, conds
        if tok.kind != "word":
            raise self.unexpected(tok)
        cmp = self.take()
        if cmp.kind != "cmp":
            if cmp.kind == "eof" or cmp.kind in ("AND", "OR", ")"):
                raise _filter_error(
                    f"'{tok.text}' at position {tok.pos} needs a comparison such as "
                    f"{tok.text}=value (bare values are not supported).")
            raise self.unexpected(cmp)
        arg = self.take()
        if arg.kind not in ("word", "str"):
            raise self.unexpected(arg)
        pred = _restriction(tok.text, cmp.text, arg.text, tok)
        cond = _pushable(tok.text, cmp.text, arg.text)
        return pred, [] if cond is None else [cond]


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    return lambda job: all(p(job) for p in preds)


def _parse_filter(text: str) -> tuple[Predicate, list[_Cond]]:
    if len(text) > 20_000:
        raise _filter_error("filter is too long.")
    try:
        return _FilterParser(text).parse()
    except RecursionError:
        raise _filter_error("filter is nested too deeply.") from None


def compile_filter(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile an AIP-160 list filter (labels.k=v, labels.k:*, state, display_name,
    create_time comparisons, AND/OR/NOT, parentheses) into a predicate on canonical jobs.
    Empty text matches everything. Unparseable text -> InvalidArgument."""
    return _parse_filter(text)[0]


@dataclass(frozen=True)
class ListFilter:
    """A list filter parsed once: its predicate and what an index could answer of it.

    Every job `matches` accepts shows one of `states` (JobState names; None: any state) and has
    every `labels` key = value; the converse need not hold, so `matches` stays the final check.
    An empty `states` means the filter matches no job at all (`never`). The states are Vertex's:
    mapping them onto a store's own states is the store side's business."""

    matches: Predicate
    states: frozenset[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def never(self) -> bool:
        return self.states is not None and not self.states


def parse_list_filter(text: str) -> ListFilter:
    """Parse a list filter once: the predicate (as compile_filter) plus its top-level AND-ed
    `state = X` and `labels.k = "v"` restrictions. Restrictions under OR or NOT, `!=`, `:` and
    other fields give nothing. Unparseable text -> InvalidArgument."""
    predicate, conds = _parse_filter(text)
    states: frozenset[str] | None = None
    labels: dict[str, str] = {}
    never = False
    for cond in conds:
        if cond.kind == "state":
            states = (frozenset({cond.value}) if states is None
                      else states & frozenset({cond.value}))
        elif labels.setdefault(cond.key, cond.value) != cond.value:
            never = True  # labels.k = "a" AND labels.k = "b"
    if never:
        states = frozenset()
    return ListFilter(matches=predicate, states=states, labels=labels)
