"""The command line client: the commands that talk to a running daemon over its control API
(submit, list, show, cancel, wait, watch, status), drawn with rich on a terminal."""

from __future__ import annotations

from tuningd.client.connection import (
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_USAGE,
    LIST_PAGE_SIZE,
    ClientError,
    ConnectError,
    Connection,
    ServerError,
    UsageError,
    job_path,
    state_filter,
)
from tuningd.client.parser import add_client_commands, main

__all__ = ["EXIT_CONNECT", "EXIT_OK", "EXIT_SERVER_ERROR", "EXIT_USAGE", "LIST_PAGE_SIZE",
           "ClientError", "ConnectError", "Connection", "ServerError", "UsageError",
           "add_client_commands", "job_path", "main", "state_filter"]
