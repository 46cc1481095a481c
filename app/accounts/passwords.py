"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 256
hasher = PasswordHasher()  # argon2id with argon2-cffi's current recommended parameters
# Verified against when the email is unknown, so that both failures take the same time.
_UNKNOWN_USER_HASH = hasher.hash("storefront-unknown-user-placeholder")


@cache
def common_passwords() -> frozenset[str]:
    return frozenset(Path(__file__).with_name("common_passwords.txt").read_text().split())


def policy_problems(password: str, email: str) -> list[str]:
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"Use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        problems.append(f"Use at most {MAX_LENGTH} characters.")
    lowered = password.casefold()
    if lowered in (email.casefold(), email.casefold().partition("@")[0]):
        problems.append("Do not use your email address.")
    if lowered in common_passwords():
        problems.append("This password is too common.")
    return problems


def hash_password(password: str) -> str:
    return hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return hasher.verify(password_hash or _UNKNOWN_USER_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return hasher.check_needs_rehash(password_hash)
