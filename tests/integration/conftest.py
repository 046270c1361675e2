"""Shared fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from engine_harness import Harness, open_harness

from tuningd.http.api import make_api_app

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Client, Harness]]:
    """The control API around a real engine and SQLite store (the engine loop is not run)."""
    async with open_harness(tmp_path) as h:
        client = TestClient(TestServer(make_api_app(h.engine)))
        await client.start_server()
        try:
            yield client, h
        finally:
            await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for real loopback HTTP to an emulator or API."""
    async with aiohttp.ClientSession() as session:
        yield session
