"""Token sources against the emulator's OAuth endpoint: key files, early refresh, 401 retry."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tuningd.adapters.google_auth import (
    AnonymousTokenSource,
    GoogleCredentialsSource,
    StaticTokenSource,
    TokenSource,
    UrllibRequest,
    refresh_margin_s,
    token_source_from_settings,
)
from tuningd.adapters.vertex_http import VertexClient
from tuningd.core.errors import ConfigError, RemoteError
from tuningd.emulator import Emulator
from tuningd.emulator.config import EmulatorConfig, ManualClock

PROJECT = "my-proj"
LOCATION = "us-central1"


def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def pem() -> str:
    return private_key_pem()


def write_service_account(tmp_path: Path, token_uri: str, pem: str) -> Path:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": f"tuningd@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }))
    return path


def write_authorized_user(tmp_path: Path, token_uri: str) -> Path:
    path = tmp_path / "adc.json"
    path.write_text(json.dumps({
        "type": "authorized_user",
        "client_id": "764086051850-example.apps.googleusercontent.com",
        "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
        "refresh_token": "1//0refresh-token-for-tests",
        "token_uri": token_uri,
    }))
    return path


def authorized_user_at(loaded: GoogleCredentialsSource, url: str) -> GoogleCredentialsSource:
    """The same user credentials refreshed at the emulator: google-auth ignores an authorized_user
    file's token_uri and always uses Google's, so it is redirected explicitly."""
    return GoogleCredentialsSource(loaded.credentials.with_token_uri(f"{url}/token"))


def job_spec() -> dict[str, Any]:
    return {
        "baseModel": "gemini-2.5-flash",
        "labels": {"tuningd-job-id": str(uuid.uuid4()), "managed-by": "tuningd"},
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/train.jsonl"},
    }


class Calls:
    """Records every (method, code) the client reports to its observer."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, method: str, code: str, seconds: float) -> None:
        self.seen.append((method, code))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def started(config: EmulatorConfig, **kwargs: Any) -> Emulator:
    emu = Emulator(config, **kwargs)
    await emu.start(port=0)
    return emu


async def test_service_account_key_file_gets_tokens(
    tmp_path: Path, pem: str, session: aiohttp.ClientSession,
) -> None:
    """A service-account key whose token_uri is the emulator yields tokens strict mode accepts."""
    emu = await started(EmulatorConfig(strict_auth=True), clock=ManualClock())
    try:
        source = GoogleCredentialsSource.from_file(
            str(write_service_account(tmp_path, f"{emu.url}/token", pem)))
        assert source.project_id == PROJECT
        calls = Calls()
        client = VertexClient(session, source, endpoint=emu.url, observer=calls)
        job = await client.create(PROJECT, LOCATION, job_spec())
        await client.get(job["name"])
        await client.list_all(PROJECT, LOCATION)
        assert calls.seen == [("create", "200"), ("get", "200"), ("list", "200")]
        token = await source.token()
        assert token is not None and token.startswith("ya29.")
        assert source.refresh_count == 1
    finally:
        await emu.stop()


async def test_authorized_user_file_uses_refresh_token_grant(
    tmp_path: Path, session: aiohttp.ClientSession,
) -> None:
    """An authorized_user (gcloud ADC) file refreshes through the refresh_token grant."""
    emu = await started(EmulatorConfig(strict_auth=True), clock=ManualClock())
    try:
        path = write_authorized_user(tmp_path, f"{emu.url}/token")
        loaded = token_source_from_settings(str(path))
        assert isinstance(loaded, GoogleCredentialsSource)
        source = authorized_user_at(loaded, emu.url)
        client = VertexClient(session, source, endpoint=emu.url)
        assert (await client.list(PROJECT, LOCATION)) == ([], "")
        assert source.refresh_count == 1
    finally:
        await emu.stop()


async def emulator_state(session: aiohttp.ClientSession, emu: Emulator) -> dict[str, Any]:
    """The emulator's inspection endpoint."""
    async with session.get(f"{emu.url}/emulator/state") as resp:
        assert resp.status == 200
        state: dict[str, Any] = await resp.json()
    return state


async def test_short_lived_tokens_are_refreshed_before_expiry(
    tmp_path: Path, pem: str, session: aiohttp.ClientSession,
) -> None:
    """With 2-second tokens, calls over three lifetimes never see a 401 and refresh rarely."""
    lifetime_s = 2
    clock = ManualClock()
    emu = await started(EmulatorConfig(strict_auth=True, token_seconds=lifetime_s), clock=clock)
    try:
        # The source schedules refreshes on the emulator's clock, so time is stepped, not slept.
        source = GoogleCredentialsSource.from_file(
            str(write_service_account(tmp_path, f"{emu.url}/token", pem)), clock=clock.now)
        client = VertexClient(session, source, endpoint=emu.url)
        step_s = 0.25
        steps = int(3 * lifetime_s / step_s) + 1
        for _ in range(steps):
            await client.list(PROJECT, LOCATION)
            clock.advance(step_s)
        state = await emulator_state(session, emu)
        assert state["requestCounts"]["list"] == {"200": steps}
        # A refresh every (lifetime - margin) = 1.5 s: at 0, 1.5, 3, 4.5 and 6 s.
        assert lifetime_s - refresh_margin_s(lifetime_s) == 1.5
        assert 4 <= source.refresh_count <= 5
        assert state["tokensIssued"] == source.refresh_count
    finally:
        await emu.stop()


async def test_short_lived_tokens_in_real_time(
    tmp_path: Path, pem: str, session: aiohttp.ClientSession,
) -> None:
    """On real clocks too, 1-second tokens used over 2.5 lifetimes never draw a 401."""
    emu = await started(EmulatorConfig(strict_auth=True, token_seconds=1))
    try:
        source = GoogleCredentialsSource.from_file(
            str(write_service_account(tmp_path, f"{emu.url}/token", pem)))
        client = VertexClient(session, source, endpoint=emu.url)
        deadline_s = time.monotonic() + 2.5
        requests = 0
        while time.monotonic() < deadline_s:
            await client.list(PROJECT, LOCATION)
            requests += 1
            await asyncio.sleep(0.05)  # pace: about 20 calls per token lifetime
        state = await emulator_state(session, emu)
        assert state["requestCounts"]["list"] == {"200": requests}
        assert 2 <= source.refresh_count < requests / 4
    finally:
        await emu.stop()


async def test_401_refreshes_exactly_once_and_retries(
    tmp_path: Path, pem: str, session: aiohttp.ClientSession,
) -> None:
    """A token the server considers expired is refreshed once and the request retried."""
    clock = ManualClock()
    emu = await started(EmulatorConfig(strict_auth=True, token_seconds=3599), clock=clock)
    try:
        source = GoogleCredentialsSource.from_file(
            str(write_service_account(tmp_path, f"{emu.url}/token", pem)))
        calls = Calls()
        client = VertexClient(session, source, endpoint=emu.url, observer=calls)
        job = await client.create(PROJECT, LOCATION, job_spec())
        assert source.refresh_count == 1
        # The server's clock runs past the token's expiry while ours does not (clock skew).
        clock.advance(3600)
        again = await client.get(job["name"])
        assert again["name"] == job["name"]
        assert source.refresh_count == 2
        assert calls.seen == [("create", "200"), ("get", "401"), ("get", "200")]
    finally:
        await emu.stop()


async def test_401_burst_refreshes_once(
    tmp_path: Path, pem: str, session: aiohttp.ClientSession,
) -> None:
    """Concurrent requests that all draw a 401 share a refresh and all succeed on retry."""
    clock = ManualClock()
    emu = await started(EmulatorConfig(strict_auth=True), clock=clock)
    try:
        source = GoogleCredentialsSource.from_file(
            str(write_service_account(tmp_path, f"{emu.url}/token", pem)))
        calls = Calls()
        client = VertexClient(session, source, endpoint=emu.url, observer=calls)
        await client.list(PROJECT, LOCATION)
        clock.advance(3600)
        await asyncio.gather(*(client.list(PROJECT, LOCATION) for _ in range(10)))
        assert calls.seen.count(("list", "401")) == 10
        assert calls.seen.count(("list", "200")) == 11
        # Normally exactly one more; a 401 read after the new token arrived may add one.
        assert 2 <= source.refresh_count <= 3
    finally:
        await emu.stop()


async def test_concurrent_callers_share_one_refresh(
    tmp_path: Path, pem: str,
) -> None:
    """Many concurrent token() calls on a cold source trigger a single refresh."""
    emu = await started(EmulatorConfig(strict_auth=True), clock=ManualClock())
    try:
        source = GoogleCredentialsSource.from_file(
            str(write_service_account(tmp_path, f"{emu.url}/token", pem)))
        tokens = await asyncio.gather(*(source.token() for _ in range(20)))
        assert len(set(tokens)) == 1
        assert source.refresh_count == 1
    finally:
        await emu.stop()


async def test_rejected_grant_is_auth_error(tmp_path: Path, pem: str) -> None:
    """A token endpoint refusing the grant surfaces as RemoteError kind auth, with no secrets."""
    emu = await started(EmulatorConfig(), clock=ManualClock())
    try:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({
            "type": "authorized_user", "client_id": "c", "client_secret": "s",
            "refresh_token": "", "token_uri": f"{emu.url}/token",
        }))
        source = authorized_user_at(GoogleCredentialsSource.from_file(str(path)), emu.url)
        with pytest.raises(RemoteError) as info:
            await source.token()
        assert info.value.kind == "auth"
    finally:
        await emu.stop()


async def test_unreachable_token_endpoint_is_transient(tmp_path: Path, pem: str) -> None:
    """A token endpoint nobody listens on surfaces as RemoteError kind transient."""
    emu = await started(EmulatorConfig(), clock=ManualClock())
    url = emu.url
    await emu.stop()
    source = GoogleCredentialsSource.from_file(
        str(write_service_account(tmp_path, f"{url}/token", pem)),
        request=UrllibRequest(default_timeout_s=2))
    with pytest.raises(RemoteError) as info:
        await source.token()
    assert info.value.kind == "transient"


async def test_tokens_never_logged(
    tmp_path: Path, pem: str, session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    """No access token, refresh token or key material appears in logs or on stdout/stderr."""
    caplog.set_level(logging.DEBUG)
    clock = ManualClock()
    emu = await started(EmulatorConfig(strict_auth=True), clock=clock)
    try:
        sa = GoogleCredentialsSource.from_file(
            str(write_service_account(tmp_path, f"{emu.url}/token", pem)))
        user = authorized_user_at(GoogleCredentialsSource.from_file(
            str(write_authorized_user(tmp_path, f"{emu.url}/token"))), emu.url)
        seen: set[str] = set()
        for source in (sa, user):
            client = VertexClient(session, source, endpoint=emu.url)
            await client.list(PROJECT, LOCATION)
            seen.add(str(await source.token()))
            clock.advance(4000)  # forces a 401 and a refresh
            await client.list(PROJECT, LOCATION)
            seen.add(str(await source.token()))
        assert len(seen) == 4
        assert "token.refreshed" in caplog.text  # the capture does see our logs
        captured = capsys.readouterr()
        text = caplog.text + captured.out + captured.err
        for secret in [*seen, "1//0refresh-token-for-tests", "d-FL95Q19q7MQmFpd7hHD0Ty",
                       "PRIVATE KEY", pem.splitlines()[1]]:
            assert secret not in text
        assert "PRIVATE KEY" not in repr(sa) and "ya29" not in repr(sa)
    finally:
        await emu.stop()


async def test_static_and_anonymous_sources() -> None:
    """The test sources return their fixed token (or None) and satisfy the protocol."""
    static = StaticTokenSource("abc")
    anonymous = AnonymousTokenSource()
    assert isinstance(static, TokenSource) and isinstance(anonymous, TokenSource)
    assert await static.token() == "abc" and "abc" not in repr(static)
    assert await anonymous.token() is None
    static.invalidate()
    assert static.invalidations == 1
    assert isinstance(token_source_from_settings("", anonymous=True), AnonymousTokenSource)


def test_bad_key_file_is_config_error(tmp_path: Path) -> None:
    """A missing or malformed key file fails fast with a ConfigError naming the file."""
    with pytest.raises(ConfigError, match=r"nope\.json"):
        token_source_from_settings(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----x"}')
    with pytest.raises(ConfigError) as info:
        token_source_from_settings(str(bad))
    assert "BEGIN" not in str(info.value)


def test_refresh_margin_scales_with_lifetime() -> None:
    """Hour-long tokens refresh 225 s early like google-auth; short ones a quarter of their life."""
    assert refresh_margin_s(3599) == 225
    assert refresh_margin_s(8) == 2
    assert refresh_margin_s(2) == 0.5
