"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 256
_hasher = PasswordHasher()  # argon2id; its cost is the settings' (configure)
_unknown_user_hash: str | None = None


def configure(time_cost: int, memory_kib: int) -> None:
    """Hash with this cost (PASSWORD_HASH_TIME_COST, PASSWORD_HASH_MEMORY_KIB); a hash made
    with another is verified as it is and replaced at the next login (`needs_rehash`)."""
    global _hasher, _unknown_user_hash
    if (_hasher.time_cost, _hasher.memory_cost) != (time_cost, memory_kib):
        _hasher, _unknown_user_hash = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib), None


def _unknown_user() -> str:
    """Verified against when the email is unknown, so that both failures take the same time."""
    global _unknown_user_hash
    if _unknown_user_hash is None:
        _unknown_user_hash = _hasher.hash("storefront-unknown-user-placeholder")
    return _unknown_user_hash


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
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _unknown_user(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
