"""The reference for create_throughput.py: a bare aiohttp server answering every POST with a
fixed small JSON body (it reads the request body, as a real handler must).

    python bench/_bare_server.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web

REPLY = {"name": "projects/p/locations/l/tuningJobs/1", "state": "JOB_STATE_QUEUED"}


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(REPLY)


def main() -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
