"""Named crash points: the daemon SIGKILLs itself there when a test asks, to prove recovery.

`TUNINGD_FAILPOINTS=submit.intent_written,...` (read once at start) arms the named points. An
unarmed point costs one set lookup. Points, in a job's order of life:

- ``store.mid_migration``: a schema migration ran but its transaction is not committed;
- ``submit.intent_written``: `submitting` is stored, the POST not yet sent;
- ``create.awaiting_reply``: the POST is on its way (killed 0.1 s after it started);
- ``create.reply_received``: Vertex's 2xx reply is read, nothing of it stored;
- ``cancel.intent_written``: a cancel request is stored, not yet sent to Vertex;
- ``cancel.sent``: Vertex acknowledged a cancel, `cancel_sent` not yet stored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

ENV_VAR = "TUNINGD_FAILPOINTS"
POINTS = frozenset({"store.mid_migration", "submit.intent_written", "create.awaiting_reply",
                    "create.reply_received", "cancel.intent_written", "cancel.sent"})

_armed: frozenset[str] = frozenset(
    p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip())


def armed(name: str) -> bool:
    return name in _armed


def hit(name: str) -> None:
    """Die at once, as a kill -9 would, if the point `name` is armed."""
    if name in _armed:
        _die(name)


def hit_soon(name: str, delay_s: float) -> None:
    """Die `delay_s` seconds from now, whatever the daemon is doing then, if `name` is armed."""
    if name in _armed:
        asyncio.get_running_loop().call_later(delay_s, _die, name)


def _die(name: str) -> None:
    # One plain line on stderr so a test's log shows where the process died.
    print(f"tuningd: failpoint {name}: SIGKILL", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
