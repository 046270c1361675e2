"""OAuth token endpoint logic (JWT-bearer and refresh_token grants) and bearer-token checks."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuningd.core.errors import Unauthenticated

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_GRANT = "refresh_token"


class OAuthError(Exception):
    """An RFC 6749 token-endpoint error: HTTP 400 with {"error", "error_description"}."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description

    def to_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class IssuedToken:
    """One access token the emulator handed out."""

    token: str
    expires_at_s: float
    subject: str


class TokenAuthority:
    """Issues opaque ya29.* tokens and, in strict mode, recognises only its own unexpired ones."""

    def __init__(self, token_seconds: int) -> None:
        self._token_seconds = token_seconds
        self._tokens: dict[str, IssuedToken] = {}
        self.issued_count = 0

    def grant(self, form: Mapping[str, str], now_s: float) -> dict[str, Any]:
        """Answer a token request (form fields already decoded); raises OAuthError."""
        grant_type = form.get("grant_type", "")
        if grant_type == JWT_BEARER_GRANT:
            subject = _check_assertion(form.get("assertion", ""), now_s)
        elif grant_type == REFRESH_GRANT:
            if not form.get("refresh_token"):
                raise OAuthError("invalid_request", "Missing required parameter: refresh_token")
            subject = form.get("client_id") or "authorized-user"
        elif not grant_type:
            raise OAuthError("invalid_request", "Missing required parameter: grant_type")
        else:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        token = "ya29." + secrets.token_urlsafe(48)
        self._tokens[token] = IssuedToken(token, now_s + self._token_seconds, subject)
        self.issued_count += 1
        return {"access_token": token, "expires_in": self._token_seconds, "token_type": "Bearer"}

    def check(self, authorization: str | None, now_s: float) -> None:
        """Strict mode: accept only 'Bearer <token>' for an unexpired token issued here."""
        if not authorization:
            raise _unauthenticated("CREDENTIALS_MISSING")
        scheme, _, token = authorization.partition(" ")
        issued = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if issued is None:
            raise _unauthenticated("ACCESS_TOKEN_TYPE_UNSUPPORTED")
        if issued.expires_at_s <= now_s:
            raise _unauthenticated("ACCESS_TOKEN_EXPIRED")

    def reset(self) -> None:
        self._tokens.clear()
        self.issued_count = 0


def _unauthenticated(reason: str) -> Unauthenticated:
    return Unauthenticated(
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        details=[{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "aiplatform.googleapis.com",
                         "method": "google.cloud.aiplatform.v1.GenAiTuningService"},
        }],
    )


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _check_assertion(assertion: str, now_s: float) -> str:
    """Decode (without verifying the signature) a service-account JWT and check iss/exp.

    `aud` is deliberately not checked: google-auth always sends Google's token URL there,
    even when the key file's token_uri points at this emulator (spec §9)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise OAuthError("invalid_grant", "Invalid JWT: Token must be a short-lived token "
                                          "and in a reasonable timeframe.")
    try:
        header = _b64url_json(parts[0])
        claims = _b64url_json(parts[1])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_grant", "Invalid JWT: malformed token.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthError("invalid_grant", "Invalid JWT: malformed token.")
    if header.get("alg") != "RS256":
        raise OAuthError("invalid_grant", "Invalid JWT Signature.")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise OAuthError("invalid_grant", "Invalid JWT: the iss claim is missing.")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise OAuthError("invalid_grant", "Invalid JWT: the exp claim is missing.")
    if exp <= now_s:
        raise OAuthError("invalid_grant", "Invalid JWT: Token must be a short-lived token "
                                          "(60 minutes) and in a reasonable timeframe. Check "
                                          "your iat and exp values in the JWT claim.")
    return issuer
