"""Plain data that crosses the accounts module's boundary (re-exported by interface.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    display_name: str
    roles: tuple[str, ...]
    is_active: bool
    email_verified: bool
    mfa_enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Session:
    """What a login or a refresh hands out."""

    access_token: str
    refresh_token: str | None
    user_id: str
    expires_in: int


@dataclass(frozen=True)
class MfaSetup:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class UserPage:
    items: tuple[User, ...]
    total: int


@dataclass(frozen=True)
class LoginAttempt:
    email: str
    password: str
    client_ip: str
    otp: str | None = None


@dataclass(frozen=True)
class TokenClaims:
    """What the accounts module reads of a token whose signature the caller has checked."""

    token_id: str  # jti
    subject: str  # sub: a user id, or guest:<uuid>
    expires_at: int  # exp, seconds since the epoch
    generation: int | None = None  # gen: the user's session generation when it was issued
    family: str | None = None  # fam: the login it belongs to

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> TokenClaims:
        """From a decoded JWT's payload."""
        return cls(
            token_id=payload["jti"],
            subject=payload["sub"],
            expires_at=payload["exp"],
            generation=payload.get("gen"),
            family=payload.get("fam"),
        )
