"""What the leader's engine and a standby keep between status requests: the failures read from
the store (the overview itself is core.overview's)."""

from __future__ import annotations

import structlog

from tuningd.core import errors
from tuningd.core.model import Job, LocalState
from tuningd.ports import JobStore

log = structlog.get_logger("tuningd.service.overview")

__all__ = ["FAILURES_READ", "OverviewCache"]

# Failed jobs read from the store, newest created first: the recent ones among them are shown.
# (A job created long before these that failed lately is missed; the store has no index by
# end time per state, and the leader remembers every failure of its own run anyway.)
FAILURES_READ = 100


class OverviewCache:
    """The failures last read from the store."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._failures: tuple[Job, ...] = ()
        self._failures_read_at: float | None = None

    async def stored_failures(self, now: float, *, every_s: float | None) -> tuple[Job, ...]:
        """The latest failed jobs in the store, read once (`every_s` None: the leader, which
        remembers later failures itself) or at most once per `every_s` (a standby).

        A store that cannot be read leaves the last answer in place: the status view is what one
        looks at when the store is in trouble, so it does not fail with it."""
        read_at = self._failures_read_at
        if read_at is not None and (every_s is None or now - read_at < every_s):
            return self._failures
        try:
            self._failures = tuple(await self._store.list_jobs(
                states=[LocalState.FAILED], limit=FAILURES_READ))
        except errors.StoreError as exc:
            log.warning("overview.failures_unread", error=exc.message)
            return self._failures
        self._failures_read_at = now
        return self._failures
