"""Emulator OAuth token endpoint (JWT-bearer and refresh_token grants) and strict bearer auth."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import google.auth.transport.requests
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from tuningd.emulator import Emulator, EmulatorConfig, ManualClock

PARENT = "projects/my-proj/locations/us-central1"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def sa_info(token_uri: str, pem: str) -> dict[str, str]:
    return {"type": "service_account", "project_id": "my-proj", "private_key_id": "k1",
            "private_key": pem, "client_email": "tuner@my-proj.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": token_uri}


def fake_jwt(claims: dict[str, Any], alg: str = "RS256") -> str:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{seg({'alg': alg, 'typ': 'JWT'})}.{seg(claims)}.c2ln"


async def token_request(http: aiohttp.ClientSession, emu: Emulator,
                        form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{emu.url}/token", data=form) as resp:
        return resp.status, await resp.json()


async def list_with(http: aiohttp.ClientSession, emu: Emulator,
                    authorization: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": authorization} if authorization else {}
    async with http.get(f"{emu.url}/v1/{PARENT}/tuningJobs", headers=headers) as resp:
        return resp.status, await resp.json()


async def test_service_account_key_file_refresh(private_key_pem: str) -> None:
    """google-auth service-account credentials whose token_uri is the emulator get a ya29 token,
    although the JWT's aud names Google's token URL."""
    async with Emulator(EmulatorConfig(token_seconds=1800), clock=ManualClock()) as emu:
        creds = service_account.Credentials.from_service_account_info(
            sa_info(f"{emu.url}/token", private_key_pem), scopes=[SCOPE])
        await asyncio.to_thread(creds.refresh, google.auth.transport.requests.Request())
        assert creds.token is not None and creds.token.startswith("ya29.")
        assert creds.valid
        assert emu.state.tokens.issued_count == 1


async def test_refresh_token_grant(http: aiohttp.ClientSession) -> None:
    """An authorized_user refresh_token grant answers access_token, expires_in and token_type."""
    async with Emulator(EmulatorConfig(token_seconds=900), clock=ManualClock()) as emu:
        creds = user_credentials.Credentials(
            token=None, refresh_token="1//r", client_id="cid", client_secret="cs",
            token_uri=f"{emu.url}/token")
        await asyncio.to_thread(creds.refresh, google.auth.transport.requests.Request())
        assert creds.token is not None and creds.token.startswith("ya29.")
        status, body = await token_request(http, emu, {"grant_type": "refresh_token",
                                                       "refresh_token": "1//r"})
        assert status == 200
        assert body["expires_in"] == 900 and body["token_type"] == "Bearer"


@pytest.mark.parametrize(("form", "error"), [
    ({"grant_type": JWT_GRANT, "assertion": "not-a-jwt"}, "invalid_grant"),
    ({"grant_type": JWT_GRANT, "assertion": fake_jwt({"iss": "a@b", "exp": 1})},
     "invalid_grant"),
    ({"grant_type": JWT_GRANT, "assertion": fake_jwt({"exp": 4_000_000_000})}, "invalid_grant"),
    ({"grant_type": JWT_GRANT,
      "assertion": fake_jwt({"iss": "a@b", "exp": 4_000_000_000}, alg="none")}, "invalid_grant"),
    ({"grant_type": "refresh_token"}, "invalid_request"),
    ({"grant_type": "password"}, "unsupported_grant_type"),
    ({}, "invalid_request"),
])
async def test_token_errors(http: aiohttp.ClientSession, form: dict[str, str],
                            error: str) -> None:
    """Bad grants answer 400 {"error", "error_description"} (expired, no iss, bad alg, ...)."""
    async with Emulator(EmulatorConfig(), clock=ManualClock()) as emu:
        status, body = await token_request(http, emu, form)
    assert status == 400
    assert body["error"] == error
    assert body["error_description"]


async def test_jwt_aud_is_not_checked(http: aiohttp.ClientSession) -> None:
    """A JWT whose aud is Google's token URL (not the emulator) is accepted."""
    async with Emulator(EmulatorConfig(), clock=ManualClock()) as emu:
        claims = {"iss": "a@b", "exp": ManualClock.DEFAULT_START_S + 3600,
                  "aud": "https://oauth2.googleapis.com/token", "scope": SCOPE}
        status, body = await token_request(http, emu, {"grant_type": JWT_GRANT,
                                                       "assertion": fake_jwt(claims)})
    assert status == 200 and body["expires_in"] == 3599


async def test_default_mode_accepts_any_or_no_token(http: aiohttp.ClientSession) -> None:
    """Without strict_auth, no header, an opaque token or a self-signed JWT are all accepted."""
    async with Emulator(EmulatorConfig(), clock=ManualClock()) as emu:
        for header in (None, "Bearer x", "Bearer " + fake_jwt({"iss": "a"})):
            assert (await list_with(http, emu, header))[0] == 200


async def test_strict_auth(http: aiohttp.ClientSession) -> None:
    """strict_auth accepts only unexpired tokens it issued; others get 401 UNAUTHENTICATED."""
    clock = ManualClock()
    async with Emulator(EmulatorConfig(strict_auth=True, token_seconds=600), clock=clock) as emu:
        for header in (None, "Bearer made-up", "Basic dXNlcjpwYXNz"):
            status, err = await list_with(http, emu, header)
            assert status == 401
            assert err["error"]["status"] == "UNAUTHENTICATED"
        _, grant = await token_request(http, emu, {"grant_type": "refresh_token",
                                                   "refresh_token": "r"})
        bearer = f"Bearer {grant['access_token']}"
        assert (await list_with(http, emu, bearer))[0] == 200
        clock.advance(600)
        status, err = await list_with(http, emu, bearer)
        assert status == 401
        assert err["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
        assert emu.state.request_counts["list"]["401"] == 4


async def test_tokens_are_not_logged(http: aiohttp.ClientSession,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Neither issued tokens nor Authorization headers appear in the emulator's log output."""
    async with Emulator(EmulatorConfig(strict_auth=True), clock=ManualClock()) as emu:
        _, grant = await token_request(http, emu, {"grant_type": "refresh_token",
                                                   "refresh_token": "secret-refresh"})
        await list_with(http, emu, f"Bearer {grant['access_token']}")
    out = capsys.readouterr()
    assert grant["access_token"] not in out.out + out.err
    assert "secret-refresh" not in out.out + out.err
