"""The accounts port's contract, run against the in-process and the HTTP implementation.

Same inputs, same DTOs (field values and types) and the same exceptions (class, extensions).
The verification emails are read from the file mailer's directory (MAIL_BACKEND=file).
"""

from __future__ import annotations

import email
import email.policy
import uuid
from pathlib import Path

import pytest
from flask_jwt_extended import decode_token

from app.accounts import interface as accounts
from tests.contract.conftest import assert_aware_utc, raises

PASSWORD = "Correct-Horse-42"
ANYWHERE = "192.0.2.1"


def verification_token(mail_dir: Path, to: str) -> str:
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(mail_dir.glob("*.eml"))
    ]
    sent = [message for message in messages if message["To"] == to]
    assert sent, f"no email was sent to {to}"
    lines = sent[-1].get_content().splitlines()
    marker = next(index for index, line in enumerate(lines) if line.endswith("POST /v1/auth/verify-email:"))
    return lines[marker + 1].strip()


def attempt(address: str, password: str = PASSWORD) -> accounts.LoginAttempt:
    return accounts.LoginAttempt(email=address, password=password, client_ip=ANYWHERE)


@pytest.fixture
def verified(in_process, mail_dir):
    """A registered and verified customer, created in process: (user, email)."""
    address = f"verified-{uuid.uuid4().hex[:8]}@example.test"
    in_process(accounts.register_user, email=address, password=PASSWORD)
    user = in_process(accounts.verify_email, token=verification_token(mail_dir, address))
    return user, address


def assert_user_types(user: accounts.User) -> None:
    assert type(user) is accounts.User
    assert type(user.roles) is tuple
    assert_aware_utc(user.created_at, user.updated_at)


def test_register_creates_an_unverified_customer_and_sends_a_link(port_app, in_process, mail_dir):
    user = accounts.register_user(email="  Ann@Example.TEST ", password=PASSWORD)

    assert_user_types(user)
    assert (user.email, user.roles, user.is_active, user.email_verified, user.mfa_enabled, user.display_name) == (
        "ann@example.test",
        ("customer",),
        True,
        False,
        False,
        "",
    )
    assert user == in_process(accounts.get_user, user_id=user.user_id)
    assert verification_token(mail_dir, "ann@example.test")


def test_a_weak_password_is_refused_with_its_reasons(port_app, in_process):
    with raises(accounts.WeakPassword, errors={"password": ["Use at least 10 characters."]}):
        accounts.register_user(email="bob@example.test", password="short")
    with raises(accounts.WeakPassword, errors={"password": ["This password is too common."]}):
        accounts.register_user(email="bob@example.test", password="password123")
    with raises(accounts.WeakPassword, errors={"password": ["Do not use your email address."]}):
        accounts.register_user(email="bob.smith.long@example.test", password="bob.smith.long@example.test")
    assert in_process(accounts.list_users).total == 0


def test_a_taken_email_is_answered_as_a_new_account_that_is_not_saved(port_app, in_process):
    registered = in_process(accounts.register_user, email="ann@example.test", password=PASSWORD)

    again = accounts.register_user(email="ANN@example.test", password="Another-Passw0rd")

    assert_user_types(again)
    assert (again.email, again.roles, again.email_verified, again.is_active) == (
        "ann@example.test",
        ("customer",),
        False,
        True,
    )
    assert again.user_id != registered.user_id
    with raises(accounts.UserNotFound, userId=again.user_id):
        in_process(accounts.get_user, user_id=again.user_id)
    assert in_process(accounts.list_users).total == 1


def test_verify_email_redeems_a_token_once(port_app, in_process, mail_dir):
    registered = in_process(accounts.register_user, email="ann@example.test", password=PASSWORD)
    token = verification_token(mail_dir, "ann@example.test")

    user = accounts.verify_email(token=token)

    assert_user_types(user)
    assert (user.user_id, user.email_verified) == (registered.user_id, True)
    with raises(accounts.InvalidToken):
        accounts.verify_email(token=token)
    with raises(accounts.InvalidToken):
        accounts.verify_email(token="not-a-token")


def test_log_in_issues_a_session(port_app, verified):
    user, address = verified

    session = accounts.log_in(attempt=attempt(address.upper()))

    assert type(session) is accounts.Session
    assert (session.user_id, session.expires_in) == (user.user_id, 15 * 60)
    claims = decode_token(session.access_token)
    assert (claims["sub"], claims["roles"]) == (user.user_id, ["customer"])
    assert decode_token(session.refresh_token)["type"] == "refresh"


def test_log_in_refuses_wrong_credentials_and_unverified_accounts(port_app, in_process, verified):
    _user, address = verified
    in_process(accounts.register_user, email="new@example.test", password=PASSWORD)

    with raises(accounts.InvalidCredentials):
        accounts.log_in(attempt=attempt(address, "Wrong-Password-1"))
    with raises(accounts.InvalidCredentials):
        accounts.log_in(attempt=attempt("nobody@example.test"))
    with raises(accounts.EmailNotVerified):
        accounts.log_in(attempt=attempt("new@example.test"))


def test_a_guest_session_has_no_refresh_token(port_app):
    session = accounts.start_guest_session()

    assert type(session) is accounts.Session
    assert session.refresh_token is None
    assert session.user_id.startswith("guest:")
    claims = decode_token(session.access_token)
    assert (claims["sub"], claims["roles"]) == (session.user_id, ["guest"])
    assert accounts.is_token_revoked(claims=accounts.TokenClaims.of(claims)) is False


def test_refresh_spends_a_refresh_token_once(port_app, in_process, verified):
    _user, address = verified
    first = in_process(accounts.log_in, attempt=attempt(address))
    refresh_claims = accounts.TokenClaims.of(decode_token(first.refresh_token))

    second = accounts.refresh_session(refresh_claims=refresh_claims)

    assert type(second) is accounts.Session
    assert second.user_id == first.user_id
    assert second.refresh_token != first.refresh_token
    with raises(accounts.RefreshTokenReused):
        accounts.refresh_session(refresh_claims=refresh_claims)
    # reuse revokes the whole login
    assert accounts.is_token_revoked(claims=accounts.TokenClaims.of(decode_token(second.access_token))) is True


def test_the_refresh_tokens_of_ended_sessions_stay_revoked(port_app, in_process, verified):
    user, address = verified
    session = in_process(accounts.log_in, attempt=attempt(address))
    refresh_claims = accounts.TokenClaims.of(decode_token(session.refresh_token))

    accounts.end_all_sessions(user_id=user.user_id)

    for _ in range(2):  # the same answer when asked again
        with raises(accounts.SessionRevoked) as refused:
            accounts.refresh_session(refresh_claims=refresh_claims)
        assert refused.value.detail == "This refresh token has been revoked; log in again."


def test_is_token_revoked_after_log_out(port_app, in_process, verified):
    _user, address = verified
    session = in_process(accounts.log_in, attempt=attempt(address))
    claims = accounts.TokenClaims.of(decode_token(session.access_token))
    assert accounts.is_token_revoked(claims=claims) is False

    assert accounts.log_out(access_claims=claims) is None

    assert accounts.is_token_revoked(claims=claims) is True
    assert in_process(accounts.is_token_revoked, claims=claims) is True


def test_get_user_and_user_not_found(port_app, in_process, verified):
    user, _address = verified

    assert accounts.get_user(user_id=user.user_id) == in_process(accounts.get_user, user_id=user.user_id)
    assert_user_types(accounts.get_user(user_id=user.user_id))
    missing = str(uuid.UUID(int=1))
    with raises(accounts.UserNotFound, userId=missing):
        accounts.get_user(user_id=missing)


def test_update_profile(port_app, in_process, verified):
    user, _address = verified

    updated = accounts.update_profile(user_id=user.user_id, display_name="Ann B.")

    assert_user_types(updated)
    assert updated.display_name == "Ann B."
    assert updated == in_process(accounts.get_user, user_id=user.user_id)
    assert accounts.update_profile(user_id=user.user_id).display_name == "Ann B."
    missing = str(uuid.UUID(int=2))
    with raises(accounts.UserNotFound, userId=missing):
        accounts.update_profile(user_id=missing, display_name="x")


def test_list_users_pages_in_creation_order(port_app, in_process):
    created = [
        in_process(accounts.register_user, email=f"user{index}@example.test", password=PASSWORD) for index in range(3)
    ]

    first = accounts.list_users(page=1, page_size=2)
    second = accounts.list_users(page=2, page_size=2)

    assert type(first) is accounts.UserPage
    assert type(first.items) is tuple
    assert (first.items, first.total) == (tuple(created[:2]), 3)
    assert (second.items, second.total) == ((created[2],), 3)
    assert accounts.list_users() == in_process(accounts.list_users)


def test_is_available_and_store_name(port_app):
    assert accounts.is_available() is True
    assert accounts.store_name() == "postgresql"
