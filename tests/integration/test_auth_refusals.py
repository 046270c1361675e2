"""Token endpoint refusals against a real aiohttp endpoint that echoes what it was sent."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from test_auth import private_key_pem, write_service_account

from tuningd.adapters.google_auth import GoogleCredentialsSource
from tuningd.core.errors import RemoteError

# Builds the answer (status, content type, body) from the form the endpoint received.
Answer = Callable[[str], tuple[int, str, str]]


class EchoEndpoint:
    """A token endpoint whose answer is computed from the request's form."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.forms: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.text()
        self.forms.append(form)
        status, content_type, body = self.answer(form)
        return web.Response(status=status, text=body, content_type=content_type)

    def assertion_parts(self) -> list[str]:
        parts = []
        for form in self.forms:
            for assertion in urllib.parse.parse_qs(form)["assertion"]:
                parts.extend(assertion.split("."))
        return parts


@pytest.fixture(scope="module")
def pem() -> str:
    return private_key_pem()


Serve = Callable[[Answer], Awaitable[tuple[EchoEndpoint, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts token endpoints on loopback; all are closed at teardown."""
    servers: list[TestServer] = []

    async def start(answer: Answer) -> tuple[EchoEndpoint, str]:
        endpoint = EchoEndpoint(answer)
        app = web.Application()
        app.router.add_post("/token", endpoint.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return endpoint, str(server.make_url("/token"))

    yield start
    for server in servers:
        await server.close()


def _json(status: int, **fields: object) -> Answer:
    return lambda form: (status, "application/json",
                         json.dumps({k: (form if v is ... else v) for k, v in fields.items()}))


CASES: list[tuple[str, Answer, str]] = [
    ("google-json", _json(400, error="invalid_grant", error_description=...),
     "token refresh rejected: HTTP 400 from {host}, error invalid_grant"),
    ("echo-as-code", _json(401, error=...), "token refresh rejected: HTTP 401 from {host}"),
    ("plain-text", lambda form: (403, "text/plain", form),
     "token refresh rejected: HTTP 403 from {host}"),
    ("no-token", _json(200, token_type="Bearer", echo=...),
     "token refresh rejected: HTTP 200 from {host}, but no usable token in the answer"),
]


@pytest.mark.parametrize(("answer", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
async def test_refusal_reports_status_and_code_never_the_body(
    tmp_path: Path, pem: str, serve: Serve, answer: Answer, expected: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever the endpoint echoes (in the description, as the error code, as plain text, in a
    200 without a token), the error says only the status, the host and a well-formed OAuth
    code; the assertion's segments and the key never reach the message or the log."""
    caplog.set_level(logging.DEBUG)
    endpoint, url = await serve(answer)
    source = GoogleCredentialsSource.from_file(str(write_service_account(tmp_path, url, pem)))
    with pytest.raises(RemoteError) as info:
        await source.token()
    host = urllib.parse.urlsplit(url).netloc
    assert info.value.message == expected.format(host=host)
    assert info.value.kind == "auth"
    parts = endpoint.assertion_parts()
    assert len(parts) == 3
    text = info.value.message + repr(info.value) + caplog.text
    for secret in [*parts, *pem.splitlines()[1:-2], "grant_type", "assertion"]:
        assert secret not in text
