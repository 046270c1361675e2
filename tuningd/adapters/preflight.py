"""Start-up checks of what the daemon needs from outside: usable credentials, a reachable Vertex.

Each problem is one WARNING line that says how to fix it; none stops the daemon (jobs wait,
and the job view shows why), since both are often fixed while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog

from tuningd.core.errors import RemoteError

__all__ = ["CREDENTIALS_FIX", "Problem", "check_at_start", "credentials_problem",
           "endpoint_problem"]

log = structlog.get_logger("tuningd.preflight")

CREDENTIALS_FIX = ("run `gcloud auth application-default login`, or set vertex.credentials_file "
                   "to a key file, or vertex.anonymous = true for an emulator")
OAUTH_ENDPOINT_FIX = ("check the network path to Google's token endpoint (DNS, a proxy, a "
                      "firewall); tuningd retries on its own")
# Long enough for a TLS handshake far away, short enough to warn within a start.
ENDPOINT_TIMEOUT_S = 5.0
# ADC may probe the metadata server (seconds when it is not there) before it gives up.
CREDENTIALS_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong at start: its log event, what is wrong, and how to fix it."""

    event: str
    error: str
    fix: str


async def credentials_problem(token: Callable[[], Awaitable[str | None]],
                              timeout_s: float = CREDENTIALS_TIMEOUT_S) -> Problem | None:
    """Fetch a token the way Vertex calls do (kept for them); a Problem, logged, when none
    comes."""
    try:
        await asyncio.wait_for(token(), timeout_s)
    except RemoteError as exc:
        if exc.kind == "auth":
            log.warning("vertex.credentials_missing", error=exc.message, fix=CREDENTIALS_FIX)
            return Problem("vertex.credentials_missing", exc.message, CREDENTIALS_FIX)
        error, fix = exc.message, OAUTH_ENDPOINT_FIX
    except TimeoutError:
        error, fix = f"no token within {timeout_s:g} s", OAUTH_ENDPOINT_FIX
    else:
        return None
    log.warning("vertex.credentials_unreachable", error=error, fix=fix)
    return Problem("vertex.credentials_unreachable", error, fix)


async def endpoint_problem(session: aiohttp.ClientSession, url: str, *, configured: bool,
                           timeout_s: float = ENDPOINT_TIMEOUT_S) -> Problem | None:
    """One plain GET of the endpoint's root: any HTTP answer (a 404 too) means reachable; a
    Problem, logged, when there is none."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s),
                               allow_redirects=False) as resp:
            await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        if configured:
            fix = ("start the Vertex emulator there (`tuningd emulator --port PORT`) or set "
                   "config key vertex.endpoint (TUNINGD_VERTEX_ENDPOINT) to one that answers")
        else:
            fix = ("check DNS, the proxy and the firewall towards googleapis.com, or set "
                   "config key vertex.endpoint to a Vertex endpoint that answers")
        log.warning("vertex.endpoint_unreachable", error=f"{url}: {reason}", fix=fix)
        return Problem("vertex.endpoint_unreachable", f"{url}: {reason}", fix)
    return None


async def check_at_start(session: aiohttp.ClientSession, *, endpoint_url: str, configured: bool,
                         token: Callable[[], Awaitable[str | None]] | None) -> list[Problem]:
    """Both checks at once; each problem is logged (one WARNING line each) and returned."""
    checks = [endpoint_problem(session, endpoint_url, configured=configured)]
    if token is not None:
        checks.append(credentials_problem(token))
    return [p for p in await asyncio.gather(*checks) if p is not None]
