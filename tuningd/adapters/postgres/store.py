"""The PostgreSQL job store: jobs, events and pages on an asyncpg pool, the engine's lease and the
change feed; every job write notifies the feed in its own transaction."""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

import asyncpg

from tuningd.adapters.postgres import leases
from tuningd.adapters.postgres.failures import FAILURES, Conn, redact, scrub, store_error
from tuningd.adapters.postgres.feed import CHANNEL, ListenFeed
from tuningd.adapters.postgres.schema import migrate
from tuningd.adapters.sqlite.reads import StoreReads
from tuningd.adapters.sqlite.rows import row_to_job
from tuningd.adapters.sqlite.schema import (
    ASSIGN_ALL,
    INSERT_JOB,
    PRUNE_CANDIDATES,
    SELECT_JOB,
    detail_json,
    job_to_row,
    labels_of,
)
from tuningd.core import errors
from tuningd.core.model import Job, LocalState
from tuningd.ports import ChangeFeed, JobStore, Lease, Leases, StaleWrite

__all__ = ["PostgresStore", "pg_row", "pg_text"]

T = TypeVar("T")

# Connections one daemon holds at most (the engine's writes, the API's reads, the lease).
POOL_SIZE = 10
CONNECT_TIMEOUT_S = 10.0
# A statement that takes longer is abandoned (StoreError, HTTP 503) rather than hanging a caller.
COMMAND_TIMEOUT_S = 30.0
# A session idle inside an open transaction this long belongs to a frozen or dead daemon (ours
# last milliseconds): the server ends it. Half the default lease ttl; app passes ha's own half.
STALE_TRANSACTION_S = 5.0
CLOSE_TIMEOUT_S = 5.0


@functools.lru_cache(maxsize=512)
def dollars(sql: str) -> str:
    """The shared queries' SQLite placeholders (?) as PostgreSQL's ($1, $2, ...); none of those
    queries holds a literal question mark."""
    parts = sql.split("?")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], start=1):
        out.append(f"${n}{part}")
    return "".join(out)


_SELECT_BY_REQUEST = dollars(f"{SELECT_JOB} WHERE project = ? AND location = ? AND request_id = ?")
_INSERT_JOB = dollars(INSERT_JOB)
_PRUNE_CANDIDATES = dollars(PRUNE_CANDIDATES)
_INSERT_JOB_ONCE = (f"{_INSERT_JOB} ON CONFLICT (project, location, request_id) "
                    "WHERE request_id IS NOT NULL DO NOTHING RETURNING id")
_INSERT_LABEL = ("INSERT INTO job_labels (job_id, key, value, project, location, created_at) "
                 "VALUES ($1, $2, $3, $4, $5, $6)")
_INSERT_EVENT = (
    "INSERT INTO job_events (job_id, seq, at, from_state, to_state, reason, detail_json) "
    "VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = $1), "
    "$2, $3, $4, $5, $6)")
_APPLY = dollars(f"UPDATE jobs SET {ASSIGN_ALL} "  # noqa: S608 (fixed column names)
                 "WHERE id = ? AND state = ? AND updated_at = ? RETURNING id")
_UPDATE = dollars(f"UPDATE jobs SET {ASSIGN_ALL} "  # noqa: S608 (fixed column names)
                  "WHERE id = ? AND state = ? RETURNING id")


class _Shared:
    """What a store and its fenced views share: the pool, the URL, the feed, damaged marks."""

    def __init__(self, pool: asyncpg.Pool[Any], url: str) -> None:
        self.pool = pool
        self.url = url
        self.shown = redact(url)
        self.closed = False
        self.damaged: set[tuple[str, str, str]] = set()
        self.pending: set[asyncio.Future[Any]] = set()
        self.feed = ListenFeed(functools.partial(asyncpg.connect, url,
                                                 timeout=CONNECT_TIMEOUT_S), url)


def pg_text(value: Any) -> Any:
    """A value as PostgreSQL text can hold it: U+0000 cannot be stored, so a NUL in free text
    (a client's display name, a remote error message) becomes U+FFFD. JSON columns never hold
    one: JSON text escapes it as \\u0000."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def pg_row(job: Job) -> tuple[Any, ...]:
    """The job's row as PostgreSQL stores it (see pg_text)."""
    return tuple(pg_text(v) for v in job_to_row(job))


def _settled(future: asyncio.Future[Any]) -> None:
    """A write whose caller went away: its outcome is still fetched (no 'never retrieved')."""
    if not future.cancelled():
        future.exception()


async def _event(conn: Conn, job_id: str, at: float, from_state: LocalState | None,
                 to_state: LocalState, reason: str, detail_text: str) -> None:
    await conn.execute(_INSERT_EVENT, job_id, float(at),
                       None if from_state is None else from_state.value, to_state.value,
                       pg_text(reason), detail_text)


async def _notify(conn: Conn, job_id: str) -> None:
    # Delivered to every LISTENer when (and only if) this transaction commits.
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, job_id)


class PostgresStore(StoreReads):
    """Jobs in PostgreSQL, shared by every daemon pointed at the database.

    Open with `await PostgresStore.open(url)` (it migrates). Each write is one transaction on a
    pooled connection, committed or rolled back alone even if its caller is cancelled; each
    read sees the last commit of any daemon. `fenced(epoch)` is the same store with every write
    refused (ports.Fenced) unless the lease's epoch is still `epoch`. Every failure of the server
    or the network is errors.StoreError (HTTP 503); messages and logs never show the password.
    """

    def __init__(self, shared: _Shared, epoch: int | None = None) -> None:
        self._shared = shared
        self._epoch = epoch
        self.damaged = shared.damaged
        self.path = shared.shown
        # (version before, version after) of the migrations open() ran.
        self.migrated = (0, 0)

    # ----- lifecycle -----

    @classmethod
    async def open(cls, url: str, *, pool_size: int = POOL_SIZE,
                   stale_transaction_s: float = STALE_TRANSACTION_S) -> PostgresStore:
        """Connect to the database at `url` and bring its schema up to date.

        The server ends a session of this store that sits in an open transaction for
        `stale_transaction_s` (unless the URL sets idle_in_transaction_session_timeout itself):
        a daemon frozen inside a write (SIGSTOP, a paused VM) would otherwise hold the lease row
        and with it the next leader's takeover, for as long as it stays frozen."""
        shown = redact(url)
        settings: dict[str, str] = {}
        if "idle_in_transaction_session_timeout" not in urllib.parse.urlsplit(url).query:
            settings["idle_in_transaction_session_timeout"] = str(
                max(1, round(stale_transaction_s * 1000)))
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S, server_settings=settings)
        except (*FAILURES, ValueError) as exc:
            raise errors.FailedPrecondition(
                f"cannot open database {shown}: {scrub(str(exc) or type(exc).__name__, url)}"
            ) from None
        store = cls(_Shared(pool, url))
        try:
            async with pool.acquire() as conn:
                store.migrated = await migrate(conn, shown)
        except FAILURES as exc:
            await store.close()
            raise errors.FailedPrecondition(
                f"cannot prepare database {shown}: {scrub(str(exc), url)}") from None
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Finish pending writes and close the pool (a fenced view leaves its store open)."""
        shared = self._shared
        if self._epoch is not None or shared.closed:
            return
        shared.closed = True
        shared.feed.close()
        if shared.pending:
            await asyncio.wait(list(shared.pending), timeout=CLOSE_TIMEOUT_S)
        try:
            await asyncio.wait_for(shared.pool.close(), timeout=CLOSE_TIMEOUT_S)
        except (*FAILURES, asyncio.CancelledError):
            shared.pool.terminate()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----- plumbing -----

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        if self._shared.closed:
            raise errors.StoreError("the job store cannot be read: it is closed", writing=False)
        try:
            return list(await self._shared.pool.fetch(dollars(sql), *params))
        except FAILURES as exc:
            raise store_error(exc, writing=False, url=self._shared.url) from exc

    async def _write(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `body` in one transaction (fenced if this is a fenced view); raise what it
        raised. Shielded: a cancelled caller does not cut a transaction in half."""
        if self._shared.closed:
            raise errors.StoreError("the job store cannot be written: it is closed")
        task = asyncio.ensure_future(self._transact(body))
        self._shared.pending.add(task)
        task.add_done_callback(self._shared.pending.discard)
        task.add_done_callback(_settled)
        return await asyncio.shield(task)

    async def _transact(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            async with self._shared.pool.acquire() as conn, conn.transaction():
                if self._epoch is not None:
                    await leases.check_fence(conn, self._epoch)
                return await body(conn)
        except FAILURES as exc:
            raise store_error(exc, writing=True, url=self._shared.url) from exc

    async def in_transaction(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `body` on a connection in one transaction of its own (maintenance: store copy);
        what it raises rolls everything back."""
        return await self._write(body)

    # ----- writes -----

    async def create_or_get(self, job: Job, reason: str = "accepted",
                            detail: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
        """Insert `job` with its first event, or return the job already holding its request_id
        in its project and location; (stored job, created)."""
        row = pg_row(job)
        detail_text = detail_json(detail)  # fail on unserializable detail before writing
        labels = [(job.id, key, value, job.project, job.location, float(job.created_at))
                  for key, value in labels_of(job.spec_json)]
        scope = (job.project, job.location, job.request_id)

        async def body(conn: Conn) -> tuple[Job, bool]:
            if job.request_id is not None:
                existing = await conn.fetchrow(_SELECT_BY_REQUEST, *scope)
                if existing is not None:
                    return row_to_job(existing), False
            try:
                if job.request_id is None:
                    await conn.execute(_INSERT_JOB, *row)
                elif await conn.fetchval(_INSERT_JOB_ONCE, *row) is None:
                    # Another daemon's create with this request_id committed meanwhile.
                    winner = await conn.fetchrow(_SELECT_BY_REQUEST, *scope)
                    assert winner is not None  # request_id rows are never deleted
                    return row_to_job(winner), False
            except asyncpg.UniqueViolationError as exc:
                raise errors.AlreadyExists(f"job {job.id} already exists: {exc}") from None
            if labels:
                await conn.executemany(_INSERT_LABEL, labels)
            await _event(conn, job.id, job.created_at, None, job.state, reason, detail_text)
            await _notify(conn, job.id)
            return job, True

        return await self._write(body)

    async def apply(self, before: Job, after: Job, reason: str | None,
                    detail: Mapping[str, Any] | None = None, *,
                    notes: Sequence[str] = ()) -> None:
        """Store a transition (the row, `notes` then one event) atomically; StaleWrite, changing
        nothing, if the stored row is not `before` any more."""
        if before.id != after.id:
            raise ValueError(f"apply() got two different jobs: {before.id} -> {after.id}")
        row = pg_row(after)
        detail_text = detail_json(detail)

        async def body(conn: Conn) -> None:
            done = await conn.fetchval(_APPLY, *row[1:], before.id, before.state.value,
                                       float(before.updated_at))
            if done is None:
                raise StaleWrite(
                    f"job {before.id}: stored row is not the expected {before.state.value} "
                    f"@ {before.updated_at!r}; transition to {after.state.value} not stored")
            for note in notes:
                await _event(conn, after.id, after.updated_at, before.state, before.state,
                             note, "{}")
            if reason is not None:
                await _event(conn, after.id, after.updated_at, before.state, after.state,
                             reason, detail_text)
            await _notify(conn, after.id)

        await self._write(body)

    async def update_job(self, job: Job) -> None:
        """Store non-transition fields without an event; StaleWrite if the stored row has
        another state or does not exist."""
        row = pg_row(job)

        async def body(conn: Conn) -> None:
            if await conn.fetchval(_UPDATE, *row[1:], job.id, job.state.value) is None:
                raise StaleWrite(
                    f"job {job.id}: no stored row in state {job.state.value}; update not stored")
            await _notify(conn, job.id)

        await self._write(body)

    async def prune_ended(self, ended_before: float, limit: int) -> int:
        """Delete up to `limit` ended jobs, oldest first, that ended before `ended_before`, with
        their events and labels, in one transaction; the number deleted."""
        if limit <= 0:
            return 0

        async def body(conn: Conn) -> int:
            ids = [row["id"] for row in await conn.fetch(_PRUNE_CANDIDATES, ended_before, limit)]
            if ids:
                await conn.execute("DELETE FROM job_events WHERE job_id = ANY($1::text[])", ids)
                await conn.execute("DELETE FROM job_labels WHERE job_id = ANY($1::text[])", ids)
                await conn.execute("DELETE FROM jobs WHERE id = ANY($1::text[])", ids)
            return len(ids)

        return await self._write(body)

    async def size_bytes(self) -> int | None:
        """The database's size as PostgreSQL counts it (every table and index of it)."""
        rows = await self._read("SELECT pg_database_size(current_database()) AS size")
        return int(rows[0]["size"])

    async def check_writable(self) -> bool:
        """True if the database answers and would take a write (for /readyz); never fenced.

        Without writing: a prober every second would otherwise be a commit a second. A standby
        server in recovery or a read-only default refuses writes, so those count as not."""
        if self._shared.closed:
            return False
        try:
            rows = await self._read(
                "SELECT NOT pg_is_in_recovery() "
                "AND NOT current_setting('transaction_read_only')::boolean AS writable")
        except errors.StoreError:
            return False
        return bool(rows and rows[0]["writable"])

    # ----- the engine's lease (ports.Leases) -----

    async def _on_lease(self, call: Callable[[Conn], Awaitable[T]]) -> T:
        if self._shared.closed:
            raise errors.StoreError("the job store cannot be written: it is closed")
        try:
            async with self._shared.pool.acquire() as conn:
                return await call(conn)
        except FAILURES as exc:
            raise store_error(exc, writing=True, url=self._shared.url) from exc

    async def acquire(self, holder: str, ttl_s: float) -> Lease | None:
        """Take the lease if free or expired, or renew it if `holder` has it already."""
        return await self._on_lease(lambda conn: leases.acquire(conn, holder, ttl_s))

    async def renew(self, holder: str, epoch: int, ttl_s: float) -> bool:
        """Extend the lease `holder` holds at `epoch`; False if it is not theirs any more."""
        return await self._on_lease(lambda conn: leases.renew(conn, holder, epoch, ttl_s))

    async def release(self, holder: str, epoch: int) -> None:
        """Give the lease up at once, if still held at `epoch`."""
        await self._on_lease(lambda conn: leases.release(conn, holder, epoch))

    async def current(self) -> Lease | None:
        """The lease as the database has it now."""
        return await self._on_lease(leases.current)

    def fenced(self, epoch: int) -> PostgresStore:
        """This store, every write refused (Fenced, nothing written) unless the lease's epoch
        is `epoch` in the write's own transaction. Closing the view leaves the store open."""
        return PostgresStore(self._shared, epoch)

    # ----- the change feed (ports.ChangeFeed) -----

    def changes(self) -> AsyncIterator[str]:
        """Ids of jobs written by any daemon as they commit; "*" after a lost connection."""
        return self._shared.feed.changes()

    async def listening(self) -> None:
        """Return once a changes() iterator listens (a write from now on is surely seen)."""
        await self._shared.feed.listening.wait()


if TYPE_CHECKING:
    # mypy proves here, not only the contract tests at run time, that this is all three ports.
    def _conforms(store: PostgresStore) -> tuple[JobStore, Leases, ChangeFeed]:
        return store, store, store
