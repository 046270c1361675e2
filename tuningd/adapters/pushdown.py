"""What of a parsed list filter the store's indexes answer, in the daemon's local states."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tuningd.core.model import LOCAL_TO_REMOTE, LocalState
from tuningd.vertex.listfilter import JOB_STATE_NUMBERS, ListFilter

__all__ = ["FilterPushdown", "filter_pushdown"]


@dataclass(frozen=True)
class FilterPushdown:
    """Necessary conditions of a list filter that the store's indexes can answer.

    Every job the filter matches is in one of `states` (None: any state) and has every
    `labels` key = value; the converse need not hold, so the filter stays the final check.
    An empty `states` means the filter matches no job at all (`never`)."""

    states: frozenset[LocalState] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def never(self) -> bool:
        return self.states is not None and not self.states


# Each JobState name -> the local states whose TuningJob view shows it (empty: none does).
_LOCAL_STATES_OF: Mapping[str, frozenset[LocalState]] = {
    name: frozenset(s for s, remote in LOCAL_TO_REMOTE.items() if remote.value == name)
    for name in JOB_STATE_NUMBERS
}


def filter_pushdown(list_filter: ListFilter) -> FilterPushdown:
    """The filter's index-answerable restrictions, with its JobStates mapped to local states."""
    states: frozenset[LocalState] | None = None
    if list_filter.states is not None:
        states = frozenset().union(*(_LOCAL_STATES_OF[n] for n in list_filter.states))
    return FilterPushdown(states=states, labels=list_filter.labels)
