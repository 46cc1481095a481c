"""Plain data that crosses the accounts module's boundary (re-exported by interface.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
