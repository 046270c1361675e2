"""A Python load generator (used when wrk is not installed): C keep-alive connections POSTing one
body for D seconds; prints one JSON line {"ok": n, "errors": n, "latencies_ms": [...sample]}.

    python bench/_load_client.py URL BODY_FILE CONNECTIONS SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def run(url: str, body: bytes, connections: int, seconds: float) -> dict[str, object]:
    ok = errors = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal ok, errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status == 200:
                            ok += 1
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                if len(latencies) < 100_000:
                    latencies.append((time.perf_counter() - started) * 1000.0)

        await asyncio.gather(*(worker() for _ in range(connections)))
    return {"ok": ok, "errors": errors, "latencies_ms": latencies[::max(1, len(latencies) // 5000)]}


def main() -> None:
    url, body_file, connections, seconds = sys.argv[1:5]
    with open(body_file, "rb") as fh:
        body = fh.read()
    result = asyncio.run(run(url, body, int(connections), float(seconds)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
