"""Hypothesis fuzzing of the emulator and the control API over real HTTP: never a 5xx, always
Google's envelope and Content-Type, and nothing created by a request that was refused."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api import FakeEngine

from tuningd.emulator import EmulatorConfig, ThreadedEmulator
from tuningd.http.api import make_api_app
from tuningd.http.protocol import EnvelopeAppRunner

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


class _ThreadedApp:
    """An aiohttp application served on loopback from a background event loop, by the daemon's
    runner (its connections answer what aiohttp refuses in Google's envelope)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner = EnvelopeAppRunner(app, access_log=None, shutdown_timeout=0.1)
        self.port = 0

    def __enter__(self) -> _ThreadedApp:
        self._thread.start()

        async def start() -> int:
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return int(self._runner.addresses[0][1])

        self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture(scope="module")
def emulator_port() -> Iterator[int]:
    with ThreadedEmulator(EmulatorConfig(seed=3, requests_per_minute=0,
                                         creates_per_minute=0)) as emu:
        yield int(emu.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def api_server() -> Iterator[tuple[int, FakeEngine]]:
    engine = FakeEngine()
    with _ThreadedApp(make_api_app(engine, max_body_bytes=262_144)) as server:
        yield server.port, engine


# ------------------------------------------------------------------------- strategies

_SEGMENT = st.one_of(
    st.sampled_from(["p", "123456789012", "us-central1", "tuningJobs", "x:cancel", "", "..",
                     "%2F", "%00", "a" * 300, "4982013113894174720", "tuningJobs:cancel"]),
    st.text(min_size=1, max_size=12).map(lambda s: urllib.parse.quote(s, safe="")),
)
_PATHS = st.one_of(
    st.builds(lambda v, p, loc, rest: f"/{v}/projects/{p}/locations/{loc}/tuningJobs{rest}",
              st.sampled_from(["v1", "v1beta1", "v2", "V1"]), _SEGMENT, _SEGMENT,
              st.sampled_from(["", "/", "/123", "/123:cancel", "/123:frob", ":rebaseTunedModel",
                               "/123/operations", "//"])),
    st.lists(_SEGMENT, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["/healthz", "/readyz", "/openapi.json", "/v1/tuningd/jobs/x", "/",
                     "/emulator/nothing"]),
)
_QUERY_VALUES = st.one_of(
    st.sampled_from(["", "-1", "0", "1", "100", "2147483648", "99999999999999999999", "1.5",
                     " 2", "json;enum-encoding=int", "state=JOB_STATE_RUNNING",
                     'labels.a="b" OR (state!=2 AND create_time>"2020-01-01T00:00:00Z")',
                     "(((", "NOT NOT x", '"unterminated', "labels.:*", "AQ", "A" * 100,
                     "9" * 5000, "state=" + "9" * 5000, "state=²", "²"]),
    st.text(max_size=30),
)
_QUERY = st.dictionaries(
    st.sampled_from(["pageSize", "page_size", "pageToken", "filter", "$alt", "alt",
                     "prettyPrint", "$fields", "priority", "requestId", "unknown"]),
    _QUERY_VALUES, max_size=4)
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                       st.sampled_from(["ADAPTER_SIZE_FOUR", "JOB_STATE_RUNNING", "gs://b/t",
                                        "gemini-2.5-flash", "3"]))
_JSON = st.recursive(_JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from([
        "baseModel", "base_model", "supervisedTuningSpec", "supervised_tuning_spec",
        "trainingDatasetUri", "hyperParameters", "epochCount", "adapterSize", "labels",
        "tunedModelDisplayName", "preTunedModel", "state", "name", "createTime",
        "evaluationConfig", "tuningJobState", "x"]), inner, max_size=5)), max_leaves=20)
_VALID = {"baseModel": "gemini-2.5-flash",
          "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/t.jsonl"}}
_HOSTILE = st.sampled_from([
    b"[" * 5000, b'{"a":1,"a":2}', b"1" * 5000, b'"\\ud800"', b"{", b'{"baseModel": 1e999}',
    b"\xff\xfe", b"[" * 120 + b"]" * 120,
    json.dumps({**_VALID, "description": "x"}).encode()[:-1] + b',"description":"y"}',
    json.dumps(_VALID).encode()[:-2] + b',"evaluationConfig":' + b'{"a":' * 900 + b"1"
    + b"}" * 900 + b"}}",
    json.dumps(_VALID).encode()[:-2] + b',"hyperParameters":{"epochCount":1' + b"0" * 4500
    + b"}}}",
    json.dumps(_VALID).encode()[:-2] + b',"hyperParameters":{"epochCount":"' + b"9" * 5000
    + b'"}}}',
    json.dumps(_VALID).encode()[:-2] + b',"hyperParameters":{"learningRateMultiplier":"'
    + b"9" * 5000 + b'"}}}',
])
# Request headers a hostile client adds (the control API fuzzer only: the emulator, like
# Google's front end, answers malformed HTTP outside the envelope).
_HEADERS = st.lists(st.sampled_from([
    ("Content-Encoding", "gzip"), ("Content-Encoding", "deflate"), ("Content-Encoding", "br"),
    ("Content-Encoding", "zstd"), ("Content-Encoding", "x-custom"),
    ("Content-Encoding", "gzip, gzip"), ("Authorization", "Bearer \xff\xfe"),
    ("Authorization", "Bearer"), ("X-Goog-Api-Client", "\xe9"), ("Accept-Encoding", "br"),
]), max_size=2, unique_by=lambda h: h[0])
_BODIES = st.one_of(
    st.none(),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.just(json.dumps(_VALID).encode()),
    st.binary(max_size=64),
    _HOSTILE, _HOSTILE, _HOSTILE,
)
_METHODS = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"])
# The real routes, so that most examples reach the parsers rather than the router.
_ROUTES = st.builds(
    lambda version, parent, route: (route[0], f"/{version}/{parent}/tuningJobs{route[1]}"),
    st.sampled_from(["v1", "v1beta1"]),
    st.sampled_from(["projects/my-proj/locations/us-central1",
                     "projects/123456789012/locations/eu"]),
    st.sampled_from([("POST", ""), ("POST", ""), ("GET", ""), ("GET", "/1"),
                     ("POST", "/1:cancel")]),
)
_REQUESTS = st.one_of(_ROUTES, _ROUTES, st.tuples(_METHODS, _PATHS))


def _send(port: int, method: str, path: str, query: dict[str, str],
          body: bytes | None, headers: Sequence[tuple[str, str]] = ()
          ) -> tuple[int, dict[str, str], bytes]:
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body or b"")))
        for name, value in headers:
            # latin-1: the header bytes as written (\xff stays one byte, not valid UTF-8).
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _check_answer(method: str, status: int, headers: dict[str, str], raw: bytes,
                  what: Any) -> Any:
    # 501 UNIMPLEMENTED is the emulator's deliberate answer to Vertex methods it does not emulate
    # (:rebaseTunedModel, ...); anything else from 500 up is a crash.
    assert status < 500 or (status == 501 and b'"UNIMPLEMENTED"' in raw), (what, status,
                                                                           raw[:300])
    if status == 200 and headers.get("Content-Type", "").startswith("text/plain"):
        return None  # /metrics would be text, but it is not mounted here
    if status == 200 and headers.get("Content-Type", "").startswith("text/html"):
        # The status page and its fragment: HTML by design; errors there are still JSON.
        return None
    assert headers.get("Content-Type") == JSON_CONTENT_TYPE, (what, headers)
    if method == "HEAD":
        return None
    body = json.loads(raw)
    if status >= 400:
        assert set(body) == {"error"}, (what, body)
        error = body["error"]
        assert error["code"] == status and isinstance(error["status"], str), (what, body)
        assert isinstance(error["message"], str) and error["message"], (what, body)
    return body


@FUZZ
@given(request=_REQUESTS, query=_QUERY, body=_BODIES)
def test_emulator_never_answers_5xx(emulator_port: int, request: tuple[str, str],
                                    query: dict[str, str], body: bytes | None) -> None:
    """Any method, path, query and body gets a 2xx or a 4xx in Google's envelope with Google's
    Content-Type from the emulator, never a 5xx."""
    method, path = request
    status, headers, raw = _send(emulator_port, method, path, query, body)
    _check_answer(method, status, headers, raw, (method, path, query, body))


@pytest.fixture(scope="module")
def documented(api_server: tuple[int, FakeEngine]) -> list[tuple[str, re.Pattern[str], set[str]]]:
    """(method, path regex, documented statuses) of every operation in the API's /openapi.json."""
    status, _, raw = _send(api_server[0], "GET", "/openapi.json", {}, None)
    assert status == 200
    operations = []
    for template, item in json.loads(raw)["paths"].items():
        pattern = re.compile(re.sub(r"\\\{[a-z]+\\\}", "[^/]*", re.escape(template)))
        for method, operation in item.items():
            operations.append((method.upper(), pattern, set(operation["responses"])))
    return operations


@FUZZ
@given(request=_REQUESTS, query=_QUERY, body=_BODIES, headers=_HEADERS)
def test_control_api_never_answers_5xx(api_server: tuple[int, FakeEngine],
                                       documented: list[tuple[str, re.Pattern[str], set[str]]],
                                       request: tuple[str, str], query: dict[str, str],
                                       body: bytes | None,
                                       headers: list[tuple[str, str]]) -> None:
    """Any method, path, query, body and hostile header gets a 2xx or a 4xx in Google's envelope
    with Google's Content-Type from the control API, a status its /openapi.json lists for that
    operation, and a refused create submits nothing."""
    port, engine = api_server
    method, path = request
    before = len(engine.submits)
    status, answer_headers, raw = _send(port, method, path, query, body, headers)
    what = (method, path, query, body and body[:200], headers)
    _check_answer(method, status, answer_headers, raw, what)
    if status != 200:
        assert len(engine.submits) == before, what
    route = urllib.parse.unquote(path)
    listed = [codes for m, pattern, codes in documented
              if m == method and pattern.fullmatch(route)]
    if listed and status != 404:
        # An unknown id is 404 on any route (and a path the router does not serve as well).
        assert any(str(status) in codes or "default" in codes for codes in listed), (what, status)
