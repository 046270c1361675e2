"""The reference for create_throughput.py: a bare aiohttp server that parses each POST's JSON body
and echoes it back as JSON (the least a JSON API handler does: read, parse, serialise, answer).

    python bench/_bare_server.py PORT
"""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.json_response(body)


def main() -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
