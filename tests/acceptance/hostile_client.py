"""A hostile client process: silent and slowloris connections to a host and port, kept open.

`python hostile_client.py HOST PORT SILENT SLOWLORIS` opens SILENT connections that never send a
byte and SLOWLORIS ones that send a request line and then one header line every half second,
prints "open", and reopens what the server closes every half second (as slowloris tools do),
until a line arrives on stdin; then it prints how many of each kind the server closed (JSON).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import socket
import sys
import time

DRIP_S = 0.5


def main(host: str, port: int, silent: int, slow: int) -> None:
    sel = selectors.DefaultSelector()
    closed = {"silent": 0, "slow": 0}
    reopen: list[str] = ["silent"] * silent + ["slow"] * slow

    def open_all() -> None:
        while reopen:
            kind = reopen.pop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((host, port))
            assert code in (0, errno.EINPROGRESS), os.strerror(code)
            sel.register(sock, selectors.EVENT_READ, [kind, 0])

    open_all()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    print("open", flush=True)
    next_drip = time.monotonic() + DRIP_S
    running = True
    while running:
        for key, _events in sel.select(timeout=max(0.0, next_drip - time.monotonic())):
            if key.data is None:
                running = False
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # closed by the server
                closed[key.data[0]] += 1
                reopen.append(key.data[0])
                sel.unregister(sock)
                sock.close()
        if time.monotonic() >= next_drip:
            next_drip += DRIP_S
            drip(sel)
            open_all()
    print(json.dumps(closed), flush=True)
    for key in list(sel.get_map().values()):
        if key.data is not None:
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]


def drip(sel: selectors.BaseSelector) -> None:
    for key in list(sel.get_map().values()):
        if key.data is None or key.data[0] != "slow":
            continue
        sent = key.data[1]
        line = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if sent == 0 else b"X-S: %d\r\n" % sent
        with contextlib.suppress(OSError):
            key.fileobj.send(line)  # type: ignore[union-attr]
            key.data[1] = sent + 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
