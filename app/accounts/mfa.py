"""TOTP second factor (RFC 6238) with pyotp: one step of clock drift allowed, no code reused."""

from __future__ import annotations

import time

import pyotp

ISSUER = "Storefront"
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()


def otpauth_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def matching_step(secret: str, code: str, *, after_step: int) -> int | None:
    """The time step `code` belongs to, if it is valid and newer than `after_step`."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(int(time.time()))
    code = code.strip()
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if step > after_step and pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None
