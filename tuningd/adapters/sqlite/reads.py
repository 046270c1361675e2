"""The job store's queries: jobs, pages, history and counts, with damaged rows left out."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import structlog

from tuningd.adapters.sqlite.rows import Undecodable, row_to_event, row_to_job
from tuningd.adapters.sqlite.schema import NON_TERMINAL, SELECT_JOB, list_query, raw_page_key
from tuningd.core import errors
from tuningd.core.model import Job, JobEvent, LocalState
from tuningd.ports import RowDamaged, prefix_end

log = structlog.get_logger("tuningd.adapters.sqlite.store")
_STATES = frozenset(s.value for s in LocalState)
# An id prefix as a range of the primary key (tests check SQLite's plan searches its index).
IDS_IN_RANGE = "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
IDS_FROM = "SELECT id FROM jobs WHERE id >= ? ORDER BY id LIMIT ?"


class StoreReads:
    """The reads of Store (which runs `_read` on its reading connection)."""

    # Damaged rows (table, key, column) reported so far: each is logged once.
    damaged: set[tuple[str, str, str]]

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    # A damaged row (bad UTF-8, JSON, state or type, see store_rows) is skipped by every read
    # that returns many and reported once; reading that one job raises RowDamaged (503).

    def _report(self, exc: RowDamaged) -> None:
        mark = (exc.table, exc.key, exc.column)
        if mark not in self.damaged:
            self.damaged.add(mark)
            log.error("store.row_damaged", table=exc.table, key=exc.key, column=exc.column,
                      problem=exc.problem, hint="skipped; `tuningd store check` lists them")

    def _one(self, rows: Sequence[Any]) -> Job | None:
        try:
            return row_to_job(rows[0]) if rows else None
        except RowDamaged as exc:
            self._report(exc)
            raise

    def _jobs(self, rows: Iterable[Sequence[Any]]) -> list[Job]:
        jobs: list[Job] = []
        for row in rows:
            try:
                jobs.append(row_to_job(row))
            except RowDamaged as exc:
                self._report(exc)
        return jobs

    async def get(self, job_id: str) -> Job | None:
        """The job with this local id, or None."""
        return self._one(await self._read(f"{SELECT_JOB} WHERE id = ?", (job_id,)))

    async def get_by_request_id(self, project: str, location: str,
                                request_id: str) -> Job | None:
        """The job created with this requestId in this project and location, or None."""
        return self._one(await self._read(
            f"{SELECT_JOB} WHERE project = ? AND location = ? AND request_id = ?",
            (project, location, request_id),
        ))

    async def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Ids starting with `prefix`, in id order, at most `limit`: a range on the primary key
        (`id >= ? AND id < ?`, which both stores answer from its index; LIKE would scan)."""
        if not prefix:
            raise errors.InvalidArgument("an id prefix must not be empty")
        if limit < 1:
            raise errors.InvalidArgument(f"limit must be >= 1, got {limit}")
        end = prefix_end(prefix)
        if end is None:
            rows = await self._read(IDS_FROM, (prefix, limit))
        else:
            rows = await self._read(IDS_IN_RANGE, (prefix, end, limit))
        # A damaged id (not text) cannot be asked for by prefix; it is reported where read whole.
        return [row[0] for row in rows if isinstance(row[0], str)
                and not isinstance(row[0], Undecodable) and row[0].startswith(prefix)]

    async def history(self, job_id: str) -> list[JobEvent]:
        """The job's events, oldest first (damaged ones left out)."""
        rows = await self._read(
            "SELECT job_id, seq, at, from_state, to_state, reason, detail_json "
            "FROM job_events WHERE job_id = ? ORDER BY seq",
            (job_id,),
        )
        events: list[JobEvent] = []
        for row in rows:
            try:
                events.append(row_to_event(row))
            except RowDamaged as exc:
                self._report(exc)
        return events

    async def active_and_queued(self) -> list[Job]:
        """Every non-terminal job (the engine's working set), oldest first."""
        marks = ", ".join("?" * len(NON_TERMINAL))
        return self._jobs(await self._read(
            f"{SELECT_JOB} WHERE state IN ({marks}) ORDER BY created_at, id",
            NON_TERMINAL,
        ))

    async def places(self) -> list[tuple[str, str]]:
        """Every (project, location) any job was ever accepted for (the places to sweep)."""
        rows = await self._read("SELECT DISTINCT project, location FROM jobs "
                                "ORDER BY project, location")
        return [(p, loc) for p, loc in rows
                if isinstance(p, str) and isinstance(loc, str)
                and not isinstance(p, Undecodable) and not isinstance(loc, Undecodable)]

    async def count_by_state(self) -> dict[LocalState, int]:
        """Number of jobs in each local state (every state present, zero included)."""
        counts = dict.fromkeys(LocalState, 0)
        for state, count in await self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            if state in _STATES:  # a damaged state is reported when its row is read
                counts[LocalState(state)] = int(count)
        return counts

    async def list_jobs(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None, limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> list[Job]:
        """Jobs newest first (created_at DESC, id DESC), at most `limit`, after `after_key`.

        `project`/`location` None means any; `states` None or empty means all; `labels` keeps
        jobs whose client labels include every given key = value. Pass page_key(last job) as
        `after_key` for the next page. Uses an index (with project and location given, also for
        one state or a label), so the cost is the page size, not the history size.
        """
        return self._jobs(await self._rows(project, location, states, after_key, limit, labels))

    async def _rows(self, project: str | None, location: str | None,
                    states: Collection[LocalState] | None, after_key: str | None, limit: int,
                    labels: Mapping[str, str] | None) -> list[Any]:
        if limit < 1:
            raise errors.InvalidArgument(f"limit must be >= 1, got {limit}")
        sql, params = list_query(project, location, states, after_key, limit, labels)
        return await self._read(sql, params)

    async def list_page(self, project: str | None = None, location: str | None = None,
                        states: Collection[LocalState] | None = None,
                        after_key: str | None = None,
                        limit: int = 50,
                        labels: Mapping[str, str] | None = None) -> tuple[list[Job], str | None]:
        """One page of list_jobs plus the key of the next page (None on the last page)."""
        rows = await self._rows(project, location, states, after_key, limit + 1, labels)
        if len(rows) > limit:
            # Rows, not jobs, decide the page: a damaged row left out is still a row read.
            return self._jobs(rows[:limit]), raw_page_key(rows[limit - 1])
        return self._jobs(rows), None
