"""Tests of the list-filter push-down: which restrictions the store may answer, in local states."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tuningd.adapters.pushdown import FilterPushdown, filter_pushdown
from tuningd.core.errors import InvalidArgument
from tuningd.core.model import LOCAL_TO_REMOTE, LocalState
from tuningd.vertex import wire

QUEUED = frozenset({LocalState.QUEUED, LocalState.SUBMITTING})


def _pushdown(text: str) -> FilterPushdown:
    """The store-side push-down of a filter parsed the way the API parses it."""
    return filter_pushdown(wire.parse_list_filter(text))


def pd(text: str) -> tuple[frozenset[LocalState] | None, dict[str, str]]:
    out = _pushdown(text)
    return out.states, dict(out.labels)


def test_no_filter_pushes_nothing() -> None:
    """An empty filter restricts nothing."""
    assert pd("") == (None, {})
    assert pd("   ") == (None, {})
    assert not _pushdown("").never


@pytest.mark.parametrize(("text", "states"), [
    ("state=JOB_STATE_QUEUED", QUEUED),
    ('state = "job_state_queued"', QUEUED),
    ("state=1", QUEUED),
    ("state=JOB_STATE_RUNNING", frozenset({LocalState.RUNNING})),
    ("state=JOB_STATE_FAILED", frozenset({LocalState.FAILED})),
    ("state=JOB_STATE_PENDING", frozenset({LocalState.PENDING})),
])
def test_state_equality_maps_to_the_local_states_rendering_as_it(
        text: str, states: frozenset[LocalState]) -> None:
    """`state = X` becomes every local state whose TuningJob view shows X."""
    assert pd(text) == (states, {})
    shown = {LOCAL_TO_REMOTE[s] for s in states}
    assert len(shown) == 1
    assert states == {s for s, remote in LOCAL_TO_REMOTE.items() if remote in shown}


@pytest.mark.parametrize("name", ["JOB_STATE_PAUSED", "JOB_STATE_EXPIRED",
                                  "JOB_STATE_UNSPECIFIED", "JOB_STATE_PARTIALLY_SUCCEEDED"])
def test_a_state_no_local_job_shows_matches_nothing(name: str) -> None:
    """A JobState tuningd never renders: the filter can match no job."""
    out = _pushdown(f"state={name}")
    assert out.states == frozenset() and out.never


def test_label_equality_quoted_or_not() -> None:
    """`labels.k=v` pushes down as an exact label match whether or not the value is
    quoted, with `*` taken literally."""
    assert pd('labels.team="rare"') == (None, {"team": "rare"})
    assert pd("labels.tuningd-job-id=7f3c2a9e-0b1d") == (None, {"tuningd-job-id": "7f3c2a9e-0b1d"})
    assert pd('labels.a="x*y"') == (None, {"a": "x*y"})  # `=` is exact, no wildcard


def test_top_level_conjuncts_combine() -> None:
    """AND, juxtaposition and parenthesised conjunctions all contribute."""
    assert pd('labels.team="a" AND state=JOB_STATE_FAILED') == (
        frozenset({LocalState.FAILED}), {"team": "a"})
    assert pd("labels.a=1 labels.b=2") == (None, {"a": "1", "b": "2"})
    assert pd("(labels.a=1 AND (state=JOB_STATE_QUEUED)) AND display_name:x*") == (
        QUEUED, {"a": "1"})
    assert pd("labels.a=1 AND (labels.b=2 OR labels.c=3)") == (None, {"a": "1"})
    assert pd("labels.a=1 AND NOT labels.b=2") == (None, {"a": "1"})
    # Repeats agree with themselves.
    assert pd("labels.a=1 AND labels.a=1") == (None, {"a": "1"})
    assert pd("state=JOB_STATE_QUEUED AND state=1") == (QUEUED, {})


def test_contradictions_match_nothing() -> None:
    """Two different required states, or two values for one label, push down as matching nothing."""
    assert _pushdown("state=JOB_STATE_FAILED AND state=JOB_STATE_RUNNING").never
    assert _pushdown("labels.a=x AND labels.a=y").never


@pytest.mark.parametrize("text", [
    # OR: neither side is necessary.
    "state=JOB_STATE_FAILED OR state=JOB_STATE_RUNNING",
    'labels.team="rare" OR display_name=x',
    '(labels.team="rare" AND state=JOB_STATE_FAILED) OR labels.b=c',
    # NOT / '-': a negated equality is not an equality.
    "NOT state=JOB_STATE_FAILED",
    "-labels.team=rare",
    "NOT (labels.team=rare AND state=JOB_STATE_FAILED)",
    # Other operators.
    "state!=JOB_STATE_FAILED",
    "labels.team!=rare",
    "labels.team:*",
    "labels.team:rare",
    "labels.team:ra*",
    "labels:team",
    # Other fields.
    "display_name=x",
    'create_time>="2021-05-18T00:00:00Z"',
    'tuned_model_display_name="x" AND update_time<"2030-01-01T00:00:00Z"',
])
def test_what_must_not_be_pushed_down(text: str) -> None:
    """OR, negation, other operators and other fields push down no restriction at all."""
    out = _pushdown(text)
    assert out.states is None and dict(out.labels) == {} and not out.never


@pytest.mark.parametrize("text", ["state==", "(labels.a=b", "foo=bar", "state=JOB_STATE_NOPE"])
def test_bad_filters_fail_as_compile_filter_does(text: str) -> None:
    """A malformed filter fails push-down with the same
    InvalidArgument message as compile_filter."""
    with pytest.raises(InvalidArgument) as a:
        wire.compile_filter(text)
    with pytest.raises(InvalidArgument) as b:
        _pushdown(text)
    assert a.value.message == b.value.message


JOBS: list[dict[str, Any]] = [
    {"state": remote.value, "labels": labels}
    for remote in sorted(set(LOCAL_TO_REMOTE.values()))
    for labels in ({}, {"a": "1"}, {"a": "2", "b": "1"}, {"b": "2"})
]
ATOMS = ["state=JOB_STATE_QUEUED", "state=JOB_STATE_FAILED", "labels.a=1", "labels.b=2",
         "labels.a!=2", "labels.b:*"]


def test_pushdown_is_a_necessary_condition_of_the_filter() -> None:
    """For every combination of two atoms under AND/OR/NOT, each job the filter matches meets
    the pushed-down conditions (with some local state that renders as its state)."""
    forms = ["{0} AND {1}", "{0} OR {1}", "NOT {0} AND {1}", "{0} {1}", "({0} OR {1}) AND {0}",
             "NOT ({0} AND {1})", "-{0} OR {1}"]
    for a, b, form in itertools.product(ATOMS, ATOMS, forms):
        text = form.format(a, b)
        pred, out = wire.compile_filter(text), _pushdown(text)
        for job in JOBS:
            if not pred(job):
                continue
            assert not out.never, text
            if out.states is not None:
                assert any(LOCAL_TO_REMOTE[s].value == job["state"] for s in out.states), text
            for k, v in out.labels.items():
                assert job["labels"].get(k) == v, text
