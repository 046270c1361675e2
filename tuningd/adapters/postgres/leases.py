"""The engine's lease in PostgreSQL: one row (holder, epoch, expiry by the database's clock), and
the fence every engine write checks in its own transaction."""

from __future__ import annotations

from typing import Any

from tuningd.adapters.postgres.failures import Conn
from tuningd.ports import Fenced, Lease

__all__ = ["acquire", "check_fence", "current", "release", "renew"]

_NAME = "engine"
# The expiry is the database's clock_timestamp() (not now(), which is the transaction's start),
# so instances whose own clocks disagree still agree on who holds the lease.
_LEFT = "GREATEST(0, EXTRACT(EPOCH FROM expires_at - clock_timestamp()))::float8"

_ACQUIRE = (  # fixed expressions only
    "UPDATE lease SET epoch = CASE WHEN holder = $1 THEN epoch ELSE epoch + 1 END, "  # noqa: S608
    "holder = $1, expires_at = clock_timestamp() + make_interval(secs => $2) "
    "WHERE name = $3 AND (holder = $1 OR holder = '' OR expires_at <= clock_timestamp()) "
    f"RETURNING holder, epoch, {_LEFT} AS left_s")


def _lease(row: Any) -> Lease | None:
    if row is None or not row["holder"]:
        return None
    return Lease(holder=row["holder"], epoch=int(row["epoch"]), remaining_s=float(row["left_s"]))


async def acquire(conn: Conn, holder: str, ttl_s: float) -> Lease | None:
    """Take the lease if free or expired (a new holder: epoch + 1), renew it if `holder` has it;
    None while another holder's lease runs. The row lock orders concurrent acquires."""
    if not holder:
        raise ValueError("a lease holder needs a non-empty name")
    row = await conn.fetchrow(_ACQUIRE, holder, float(ttl_s), _NAME)
    return _lease(row)


async def renew(conn: Conn, holder: str, epoch: int, ttl_s: float) -> bool:
    """Extend the lease `holder` holds at `epoch`; False if it is not theirs any more. A lease
    that ran out but that nobody took is still theirs: no one else wrote at another epoch."""
    done = await conn.fetchval(
        "UPDATE lease SET expires_at = clock_timestamp() + make_interval(secs => $3) "
        "WHERE name = $4 AND holder = $1 AND epoch = $2 RETURNING true",
        holder, epoch, float(ttl_s), _NAME)
    return bool(done)


async def release(conn: Conn, holder: str, epoch: int) -> None:
    """Give the lease up at once if still held at `epoch` (the next acquire bumps the epoch)."""
    await conn.execute(
        "UPDATE lease SET holder = '', expires_at = clock_timestamp() "
        "WHERE name = $3 AND holder = $1 AND epoch = $2", holder, epoch, _NAME)


async def current(conn: Conn) -> Lease | None:
    """The lease as the database has it now (None: never taken, or released)."""
    return _lease(await conn.fetchrow(
        f"SELECT holder, epoch, {_LEFT} AS left_s FROM lease "  # noqa: S608 (fixed)
        "WHERE name = $1", _NAME))


async def check_fence(conn: Conn, epoch: int) -> None:
    """Inside a write's transaction: raise Fenced unless the lease's epoch is `epoch`.

    FOR SHARE keeps the row as read until the write commits: a takeover (an UPDATE of the row)
    waits for the write, and a write that starts after the takeover sees the new epoch.
    """
    found = await conn.fetchval("SELECT epoch FROM lease WHERE name = $1 FOR SHARE", _NAME)
    if found is None or int(found) != epoch:
        raise Fenced(epoch, None if found is None else int(found))
