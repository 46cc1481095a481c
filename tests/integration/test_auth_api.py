"""The accounts API end to end: /v1/auth and /v1/users over HTTP, real PostgreSQL behind.

What a client sees is asserted: status, `application/problem+json` with its `code` and
`errors`, headers, tokens, and the emails the file mailer writes. Tests that need other
settings build a second app; they come last, since that re-initialises the shared extensions.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import logging
import re
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import jwt as pyjwt
import pyotp
import pytest
import redis
from argon2 import PasswordHasher
from flask_jwt_extended import create_access_token, decode_token
from flask_migrate import upgrade
from sqlalchemy import select, update

from app.accounts import interface as accounts
from app.accounts import one_time_tokens, passwords
from app.accounts.mail import MailDeliveryFailed
from app.accounts.models import OneTimeToken, RefreshToken, RevokedToken, User, utcnow
from app.extensions import db
from tests.conftest import TEST_SECRET
from tests.problems import expect_problem

PASSWORD = "Correct-Horse-42"
NEW_PASSWORD = "Battery-Staple-77"
OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256-987654321"
USER_FIELDS = {
    *("userId", "email", "displayName", "roles", "isActive", "emailVerified", "mfaEnabled", "createdAt", "updatedAt")
}
SESSION_FIELDS = {"accessToken", "refreshToken", "userId", "expiresIn", "tokenType"}
TOKEN_LINES = ("POST /v1/auth/verify-email:", "POST /v1/auth/password/reset:")


# --- helpers -------------------------------------------------------------------------------


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def from_ip(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def emails_to(mail_dir: Path, to: str) -> list[EmailMessage]:
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(mail_dir.glob("*.eml"))  # names sort by sending time
    ]
    return [message for message in messages if message["To"] == to]


def last_email(mail_dir: Path, to: str) -> EmailMessage:
    messages = emails_to(mail_dir, to)
    assert messages, f"no email was sent to {to}"
    return messages[-1]


def token_from(message: EmailMessage) -> str:
    lines = message.get_content().splitlines()
    for index, line in enumerate(lines):
        if line.endswith(TOKEN_LINES):
            return lines[index + 1].strip()
    raise AssertionError(f"no token in {message.get_content()!r}")


def register(client, address: str, password: str = PASSWORD):
    return client.post("/v1/auth/register", json={"email": address, "password": password})


def register_and_verify(client, mail_dir: Path, address: str, password: str = PASSWORD) -> dict:
    assert register(client, address, password).status_code == 201
    verified = client.post("/v1/auth/verify-email", json={"token": token_from(last_email(mail_dir, address))})
    assert verified.status_code == 200, verified.get_data(as_text=True)
    return verified.get_json()


def log_in(client, address: str, password: str = PASSWORD, **extra):
    return client.post("/v1/auth/login", json={"email": address, "password": password}, **extra)


def login(client, address: str, password: str = PASSWORD, **body) -> dict:
    """A successful login's session (accessToken, refreshToken, ...)."""
    response = client.post("/v1/auth/login", json={"email": address, "password": password, **body})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def me(client, token: str):
    return client.get("/v1/users/me", headers=auth(token))


def refresh(client, refresh_token: str):
    return client.post("/v1/auth/refresh", headers=auth(refresh_token))


def claims_of(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def forgot(client, address: str):
    return client.post("/v1/auth/password/forgot", json={"email": address})


def reset(client, token: str, new_password: str = NEW_PASSWORD):
    return client.post("/v1/auth/password/reset", json={"token": token, "newPassword": new_password})


def expire_one_time_tokens(app) -> None:
    with app.app_context():
        db.session.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


def user_row(app, address: str) -> User | None:
    with app.app_context():
        return db.session.scalar(select(User).where(User.email == address))


def patch_user(client, headers, user_id: str, **changes):
    return client.patch(f"/v1/users/{user_id}", json=changes, headers=headers)


def enable_mfa(client, token: str) -> str:
    """Turn MFA on (with the previous step's code, so the current one stays unused); the secret."""
    secret = client.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=auth(token)).get_json()["secret"]
    if time.time() % 30 > 29:  # so that the server is in the same step as this code's "previous"
        time.sleep(1.1)
    otp = pyotp.TOTP(secret).at(time.time() - 30)
    enabled = client.post("/v1/auth/mfa/enable", json={"otp": otp, "password": PASSWORD}, headers=auth(token))
    assert enabled.status_code == 200, enabled.get_data(as_text=True)
    return secret


def wrong_codes(secret: str) -> list[str]:
    """Six-digit codes that no step near now has (the server accepts one step either side)."""
    totp = pyotp.TOTP(secret)
    near = {totp.at(time.time() + 30 * step) for step in range(-3, 4)}
    return [code for n in range(1, 20) if (code := f"{(int(totp.now()) + n * 7919) % 1_000_000:06d}") not in near]


@pytest.fixture
def ada(client, mail_dir) -> dict:
    """A verified customer, ada@example.test, with PASSWORD."""
    return register_and_verify(client, mail_dir, "ada@example.test")


# --- registration --------------------------------------------------------------------------


def test_register_creates_an_unverified_customer_and_emails_a_link(client, mail_dir, settings):
    response = register(client, "Ada.Lovelace@Example.TEST")

    assert response.status_code == 201
    user = response.get_json()
    assert set(user) == USER_FIELDS
    assert user["email"] == "ada.lovelace@example.test"
    assert user["roles"] == ["customer"]
    assert (user["emailVerified"], user["mfaEnabled"], user["isActive"]) == (False, False, True)
    uuid.UUID(user["userId"])
    text = response.get_data(as_text=True).lower()
    assert "password" not in text
    assert "argon2" not in text
    message = last_email(mail_dir, "ada.lovelace@example.test")
    assert message["Subject"] == "Confirm your email address"
    token = token_from(message)
    assert f"{settings.auth.public_base_url}/verify-email?token={token}" in message.get_content()
    assert re.fullmatch(r"[\w-]{43}", token)  # 256 random bits, URL-safe


def test_registering_a_taken_email_answers_as_for_a_new_one_and_tells_the_owner(client, mail_dir):
    first = register(client, "ada@example.test")
    token_from(last_email(mail_dir, "ada@example.test"))

    again = register(client, "ADA@Example.Test", "Another-Passw0rd")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.mimetype == first.mimetype == "application/json"
    taken, new = again.get_json(), first.get_json()
    assert set(taken) == set(new) == USER_FIELDS
    assert taken["userId"] != new["userId"]
    assert uuid.UUID(taken["userId"]).version == 4  # shaped like a new account's id
    assert {key: taken[key] for key in USER_FIELDS - {"userId", "createdAt", "updatedAt"}} == {
        key: new[key] for key in USER_FIELDS - {"userId", "createdAt", "updatedAt"}
    }
    verification, exists = emails_to(mail_dir, "ada@example.test")
    assert verification["Subject"] == "Confirm your email address"
    assert exists["Subject"] == "You already have a Storefront account"
    assert "use your password at http://localhost:3000." in exists.get_content()  # PUBLIC_BASE_URL
    assert "POST /v1/auth/password/forgot" in exists.get_content()
    assert "token" not in exists.get_content().lower()  # no link that would act on the account
    # the account is unchanged: its password is the first one, and its link still verifies it
    assert client.post("/v1/auth/verify-email", json={"token": token_from(verification)}).status_code == 200
    expect_problem(log_in(client, "ada@example.test", "Another-Passw0rd"), 401, "invalid_credentials")
    assert log_in(client, "ada@example.test").status_code == 200


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Short-1", "Use at least 10 characters."),
        ("X" * 257, "Length must be between 1 and 256."),
        ("LongLocalPart@Example.test", "Do not use your email address."),
        ("LONGLOCALPART", "Do not use your email address."),
        ("password123", "This password is too common."),
        ("Password123", "This password is too common."),
    ],
)
def test_register_enforces_the_password_policy(client, mail_dir, password, message):
    body = expect_problem(register(client, "longlocalpart@example.test", password), 400, "validation_error")

    assert body["errors"] == {"password": [message]}
    assert emails_to(mail_dir, "longlocalpart@example.test") == []
    assert register(client, "longlocalpart@example.test").status_code == 201  # nothing was kept


def test_a_weak_password_is_refused_with_the_policys_detail(client):
    refused = register(client, "ada@example.test", "Short-1")

    expect_problem(refused, 400, "validation_error", detail="The password does not meet the policy.")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "ada@", "password": PASSWORD}, "email"),
        ({"password": PASSWORD}, "email"),
        ({"email": "ada@example.test"}, "password"),
        ({"email": "ada@example.test", "password": PASSWORD, "roles": ["admin"]}, "roles"),
        ({"email": "ada@example.test", "password": PASSWORD, "emailVerified": True}, "emailVerified"),
    ],
)
def test_register_refuses_invalid_bodies(client, app, body, field):
    problem = expect_problem(client.post("/v1/auth/register", json=body), 400, "validation_error")

    assert field in problem["errors"]
    assert user_row(app, "ada@example.test") is None


def test_register_needs_a_json_body(client):
    as_form = client.post("/v1/auth/register", data={"email": "ada@example.test", "password": PASSWORD})
    expect_problem(as_form, 415, "unsupported_media_type")
    broken = client.post("/v1/auth/register", data="{not json", content_type="application/json")
    expect_problem(broken, 400, "malformed_json")


# --- email verification --------------------------------------------------------------------


def test_verification_token_works_once(client, mail_dir):
    register(client, "ada@example.test")
    token = token_from(last_email(mail_dir, "ada@example.test"))

    verified = client.post("/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 200
    assert verified.get_json()["emailVerified"] is True
    assert verified.get_json()["email"] == "ada@example.test"
    assert verified.headers["Cache-Control"] == "no-store"

    again = client.post("/v1/auth/verify-email", json={"token": token})
    detail = "This link is invalid, expired or already used; ask for a new one."
    expect_problem(again, 400, "invalid_token", detail=detail)


def test_a_link_expires_at_its_expiry_moment(client, app, mail_dir, monkeypatch):
    register(client, "ada@example.test")
    token = token_from(last_email(mail_dir, "ada@example.test"))
    with app.app_context():
        expires_at = db.session.scalar(select(OneTimeToken.expires_at))
    monkeypatch.setattr(one_time_tokens, "utcnow", lambda: expires_at)  # that very moment

    expect_problem(client.post("/v1/auth/verify-email", json={"token": token}), 400, "invalid_token")


def test_expired_verification_token_is_refused(client, app, mail_dir):
    register(client, "ada@example.test")
    token = token_from(last_email(mail_dir, "ada@example.test"))
    expire_one_time_tokens(app)

    expect_problem(client.post("/v1/auth/verify-email", json={"token": token}), 400, "invalid_token")
    expect_problem(log_in(client, "ada@example.test"), 403, "email_not_verified")


@pytest.mark.parametrize("token", ["garbage", "x" * 512, "0" * 43])
def test_unknown_verification_tokens_are_refused(client, token):
    expect_problem(client.post("/v1/auth/verify-email", json={"token": token}), 400, "invalid_token")


@pytest.mark.parametrize(("body", "field"), [({}, "token"), ({"token": ""}, "token"), ({"token": "x" * 513}, "token")])
def test_verify_email_validates_the_body(client, body, field):
    problem = expect_problem(client.post("/v1/auth/verify-email", json=body), 400, "validation_error")
    assert field in problem["errors"]


def test_tokens_only_serve_their_own_purpose(client, mail_dir):
    register(client, "ada@example.test")
    verification = token_from(last_email(mail_dir, "ada@example.test"))
    forgot(client, "ada@example.test")
    reset_token = token_from(last_email(mail_dir, "ada@example.test"))
    assert reset_token != verification

    expect_problem(client.post("/v1/auth/verify-email", json={"token": reset_token}), 400, "invalid_token")
    expect_problem(reset(client, verification), 400, "invalid_token")

    # neither misuse spent the token
    assert client.post("/v1/auth/verify-email", json={"token": verification}).status_code == 200
    assert reset(client, reset_token).status_code == 204


def test_resend_answers_the_same_for_every_address_and_mails_only_the_unverified(client, mail_dir, ada):
    register(client, "bob@example.test")
    first_link = token_from(last_email(mail_dir, "bob@example.test"))

    answers = [
        client.post("/v1/auth/verify-email/resend", json={"email": address})
        for address in ("nobody@example.test", "BOB@example.test", "ada@example.test")
    ]

    assert {response.status_code for response in answers} == {202}
    assert {response.get_data() for response in answers} == {answers[0].get_data()}
    assert emails_to(mail_dir, "nobody@example.test") == []
    assert len(emails_to(mail_dir, "ada@example.test")) == 1  # only the one of the registration
    bob = emails_to(mail_dir, "bob@example.test")
    assert len(bob) == 2
    second_link = token_from(bob[-1])
    assert second_link != first_link
    assert client.post("/v1/auth/verify-email", json={"token": second_link}).status_code == 200


def test_resend_validates_the_email(client):
    problem = expect_problem(
        client.post("/v1/auth/verify-email/resend", json={"email": "nope"}), 400, "validation_error"
    )
    assert list(problem["errors"]) == ["email"]


# --- login ---------------------------------------------------------------------------------


def test_unverified_account_gets_403_only_with_the_right_password(client):
    register(client, "ada@example.test")

    detail = "Confirm your email address first (POST /v1/auth/verify-email/resend)."
    expect_problem(log_in(client, "ada@example.test"), 403, "email_not_verified", detail=detail)
    expect_problem(log_in(client, "ada@example.test", "Wrong-Password-1"), 401, "invalid_credentials")


def test_a_right_password_refused_for_an_unverified_address_is_not_counted_as_a_guess(client):
    """It neither counts towards the lock nor takes back a guess counted before it."""
    register(client, "ada@example.test")
    for _ in range(4):
        expect_problem(log_in(client, "ada@example.test", "Wrong-Password-1"), 401, "invalid_credentials")
    expect_problem(log_in(client, "ada@example.test"), 403, "email_not_verified")
    expect_problem(log_in(client, "ada@example.test", "Wrong-Password-1"), 401, "invalid_credentials")  # the 5th

    expect_problem(log_in(client, "ada@example.test"), 429, "login_locked")


def test_wrong_password_and_unknown_email_get_the_same_answer(client, ada):
    wrong_password = log_in(client, "ada@example.test", "Wrong-Password-1")
    unknown_email = log_in(client, "nobody@example.test", PASSWORD)

    first = expect_problem(wrong_password, 401, "invalid_credentials", detail="Wrong email or password.")
    second = expect_problem(unknown_email, 401, "invalid_credentials")
    first.pop("instance")
    second.pop("instance")
    assert first == second
    assert "errors" not in first


def test_login_returns_a_session_with_a_well_formed_access_token(app, client, ada):
    session = login(client, "ada@example.test")

    assert set(session) == SESSION_FIELDS
    assert (session["userId"], session["expiresIn"], session["tokenType"]) == (ada["userId"], 900, "Bearer")
    claims = claims_of(session["accessToken"])
    assert claims["sub"] == claims["userId"] == ada["userId"]
    assert claims["roles"] == ["customer"]
    assert (claims["iss"], claims["aud"], claims["type"]) == ("storefront", "storefront-api", "access")
    assert claims["exp"] - claims["iat"] == 900
    refresh_claims = claims_of(session["refreshToken"])
    assert refresh_claims["type"] == "refresh"
    assert refresh_claims["sub"] == ada["userId"]
    with app.app_context():  # its record expires with it
        stored = db.session.get(RefreshToken, refresh_claims["jti"])
        assert abs(stored.expires_at.timestamp() - refresh_claims["exp"]) < 1
    assert me(client, session["accessToken"]).get_json()["userId"] == ada["userId"]


@pytest.mark.parametrize("address", ["ADA@EXAMPLE.TEST", "Ada@Example.Test"])
def test_login_ignores_the_case_of_the_email(client, ada, address):
    assert login(client, address)["userId"] == ada["userId"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "ada@example.test"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "ada@example.test", "password": PASSWORD, "otp": "12345"}, "otp"),
        ({"email": "ada@example.test", "password": PASSWORD, "otp": "abcdef"}, "otp"),
        ({"email": "ada@example.test", "password": PASSWORD, "remember": True}, "remember"),
    ],
)
def test_login_validates_the_body(client, ada, body, field):
    problem = expect_problem(client.post("/v1/auth/login", json=body), 400, "validation_error")
    assert field in problem["errors"]


def test_repeated_failures_lock_the_account_even_for_the_right_password(client, ada):
    for _ in range(5):
        expect_problem(log_in(client, "ada@example.test", "Wrong-Password-1"), 401, "invalid_credentials")

    locked = log_in(client, "ada@example.test")
    expect_problem(locked, 429, "login_locked", detail="Too many failed logins; try again later.")
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    expect_problem(log_in(client, "Ada@Example.test"), 429, "login_locked")  # the account, not its spelling


def test_four_failures_do_not_lock_and_a_success_starts_the_count_again(client, ada):
    addresses = iter(["10.0.1.1"] * 20)  # one address: the (account, IP) count
    for _ in range(4):
        expect_problem(
            log_in(client, "ada@example.test", "Wrong-1234", **from_ip(next(addresses))), 401, "invalid_credentials"
        )
    assert log_in(client, "ada@example.test", **from_ip(next(addresses))).status_code == 200
    for _ in range(4):
        expect_problem(
            log_in(client, "ada@example.test", "Wrong-1234", **from_ip(next(addresses))), 401, "invalid_credentials"
        )

    assert log_in(client, "ada@example.test", **from_ip(next(addresses))).status_code == 200


def test_failures_at_other_accounts_do_not_lock_an_account(client, ada):
    """Locks are per (account, IP): one address shared by many people (an office NAT) is not
    locked for everyone by some of them; guessing over many accounts is held by AUTH_RATE_LIMIT."""
    for n in range(5):
        log_in(client, f"nobody{n}@example.test", "Wrong-Password-1", **from_ip("10.0.2.1"))

    assert log_in(client, "ada@example.test", **from_ip("10.0.2.1")).status_code == 200


def test_disabled_account_cannot_log_in(client, ada, admin_headers):
    assert patch_user(client, admin_headers, ada["userId"], isActive=False).status_code == 200

    expect_problem(log_in(client, "ada@example.test"), 403, "account_disabled", detail="This account is disabled.")
    expect_problem(log_in(client, "ada@example.test", "Wrong-Password-1"), 401, "invalid_credentials")


# --- refresh, logout -----------------------------------------------------------------------


def test_refresh_rotates_and_a_replayed_token_revokes_the_whole_login(client, ada):
    session = login(client, "ada@example.test")

    rotated = refresh(client, session["refreshToken"])
    assert rotated.status_code == 200
    assert rotated.headers["Cache-Control"] == "no-store"
    pair = rotated.get_json()
    assert set(pair) == SESSION_FIELDS
    assert pair["userId"] == ada["userId"]
    assert pair["refreshToken"] != session["refreshToken"]
    assert pair["accessToken"] != session["accessToken"]
    assert claims_of(pair["refreshToken"])["fam"] == claims_of(session["refreshToken"])["fam"]
    assert me(client, pair["accessToken"]).status_code == 200

    reused = refresh(client, session["refreshToken"])
    detail = "This refresh token was already used; every session of this login is revoked."
    expect_problem(reused, 401, "refresh_token_reused", detail=detail)
    expect_problem(refresh(client, pair["refreshToken"]), 401, "token_revoked")


def test_a_replayed_login_stays_ended_once_its_access_tokens_have_expired(app, client, ada):
    """The revocation of the login's access tokens is forgotten once they have expired; its
    refresh tokens, which live longer, stay revoked."""
    session = login(client, "ada@example.test")
    pair = refresh(client, session["refreshToken"]).get_json()
    expect_problem(refresh(client, session["refreshToken"]), 401, "refresh_token_reused")
    with app.app_context():  # as if the access tokens had expired ...
        db.session.execute(update(RevokedToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    other = login(client, "ada@example.test")
    assert client.post("/v1/auth/logout", headers=auth(other["accessToken"])).status_code == 204  # ... and forgotten
    with app.app_context():
        assert db.session.get(RevokedToken, f"family:{claims_of(pair['refreshToken'])['fam']}") is None

    expired_login = refresh(client, pair["refreshToken"])

    expect_problem(expired_login, 401, "token_revoked", detail="This refresh token has been revoked; log in again.")


def test_a_replay_does_not_end_other_logins(client, ada):
    stolen = login(client, "ada@example.test")
    other = login(client, "ada@example.test")
    refresh(client, stolen["refreshToken"])
    expect_problem(refresh(client, stolen["refreshToken"]), 401, "refresh_token_reused")

    assert refresh(client, other["refreshToken"]).status_code == 200


def test_refresh_wants_a_refresh_token_and_access_routes_want_an_access_token(client, ada):
    session = login(client, "ada@example.test")

    expect_problem(refresh(client, session["accessToken"]), 401, "token_invalid")
    expect_problem(me(client, session["refreshToken"]), 401, "token_invalid")
    missing = expect_problem(client.post("/v1/auth/refresh"), 401, "token_missing")
    assert missing["detail"]
    assert client.post("/v1/auth/refresh").headers["WWW-Authenticate"] == 'Bearer realm="storefront"'


def test_logout_revokes_the_access_token_and_its_refresh_token(client, ada):
    session = login(client, "ada@example.test")
    other = login(client, "ada@example.test")

    logged_out = client.post("/v1/auth/logout", headers=auth(session["accessToken"]))
    assert logged_out.status_code == 204
    assert logged_out.get_data() == b""

    expect_problem(me(client, session["accessToken"]), 401, "token_revoked")
    expect_problem(refresh(client, session["refreshToken"]), 401, "token_revoked")
    expect_problem(client.post("/v1/auth/logout", headers=auth(session["accessToken"])), 401, "token_revoked")
    assert me(client, other["accessToken"]).status_code == 200  # another login is not ended
    assert refresh(client, other["refreshToken"]).status_code == 200


def test_concurrent_logouts_with_one_token_never_fail(app, ada):
    """A double-clicked logout: the revocation is one insert that ignores a duplicate, so the
    second request cannot trip over the first's primary key (once a 500)."""
    session = login(app.test_client(), "ada@example.test")
    start = threading.Barrier(6)

    def log_out(_: int) -> int:
        client = app.test_client()
        start.wait()
        return client.post("/v1/auth/logout", headers=auth(session["accessToken"])).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = set(pool.map(log_out, range(6)))
    assert statuses <= {204, 401}, statuses  # 401 token_revoked for one that checked after a commit
    assert 204 in statuses
    expect_problem(me(app.test_client(), session["accessToken"]), 401, "token_revoked")


def test_logout_after_a_refresh_ends_the_rotated_tokens_too(client, ada):
    session = login(client, "ada@example.test")
    pair = refresh(client, session["refreshToken"]).get_json()

    assert client.post("/v1/auth/logout", headers=auth(pair["accessToken"])).status_code == 204

    expect_problem(refresh(client, pair["refreshToken"]), 401, "token_revoked")


def test_a_retried_logout_and_a_later_logout_everywhere_keep_the_moment_the_login_ended(app, client, ada):
    """The port may send log_out again (it is idempotent): the second call changes nothing;
    nor does ending every session later, for a login already ended."""
    session = login(client, "ada@example.test")
    family = claims_of(session["refreshToken"])["fam"]
    ended_at = select(RefreshToken.revoked_at).where(RefreshToken.family_id == family)
    with app.app_context():
        claims = accounts.TokenClaims.of(decode_token(session["accessToken"]))
        accounts.log_out(access_claims=claims)
        ended = db.session.scalars(ended_at).all()

        accounts.log_out(access_claims=claims)
        accounts.end_all_sessions(user_id=ada["userId"])

        assert db.session.scalars(ended_at).all() == ended
    assert None not in ended


def test_logout_needs_a_token(client):
    expect_problem(client.post("/v1/auth/logout"), 401, "token_missing")
    expect_problem(client.post("/v1/auth/logout-all"), 401, "token_missing")


def test_logout_all_ends_every_session(client, ada, mail_dir):
    first = login(client, "ada@example.test")
    second = login(client, "ada@example.test")
    register_and_verify(client, mail_dir, "bob@example.test")
    bob = login(client, "bob@example.test")

    assert client.post("/v1/auth/logout-all", headers=auth(first["accessToken"])).status_code == 204

    for session in (first, second):
        expect_problem(me(client, session["accessToken"]), 401, "token_revoked")
        expect_problem(refresh(client, session["refreshToken"]), 401, "token_revoked")
    assert me(client, bob["accessToken"]).status_code == 200
    assert refresh(client, bob["refreshToken"]).status_code == 200  # another user's login goes on
    assert me(client, login(client, "ada@example.test")["accessToken"]).status_code == 200


# --- password reset ------------------------------------------------------------------------


def test_forgot_password_answers_202_for_every_address(client, ada, mail_dir):
    unknown = forgot(client, "nobody@example.test")
    known = forgot(client, "ADA@example.test")

    assert (unknown.status_code, known.status_code) == (202, 202)
    assert unknown.get_data() == known.get_data()
    assert unknown.headers["Cache-Control"] == "no-store"
    assert emails_to(mail_dir, "nobody@example.test") == []
    message = last_email(mail_dir, "ada@example.test")
    assert message["Subject"] == "Reset your password"
    assert "/reset-password?token=" in message.get_content()


def test_reset_password_changes_it_and_ends_every_session(client, ada, mail_dir):
    session = login(client, "ada@example.test")
    forgot(client, "ada@example.test")
    token = token_from(last_email(mail_dir, "ada@example.test"))

    done = reset(client, token)
    assert done.status_code == 204
    assert done.headers["Cache-Control"] == "no-store"

    expect_problem(log_in(client, "ada@example.test"), 401, "invalid_credentials")
    assert login(client, "ada@example.test", NEW_PASSWORD)["userId"] == ada["userId"]
    expect_problem(me(client, session["accessToken"]), 401, "token_revoked")
    expect_problem(refresh(client, session["refreshToken"]), 401, "token_revoked")
    expect_problem(reset(client, token, "Yet-Another-Pass-9"), 400, "invalid_token")


def test_reset_proves_the_address_of_an_unverified_account(client, mail_dir):
    register(client, "ada@example.test")
    verification_link = token_from(last_email(mail_dir, "ada@example.test"))
    forgot(client, "ada@example.test")

    assert reset(client, token_from(last_email(mail_dir, "ada@example.test"))).status_code == 204

    assert login(client, "ada@example.test", NEW_PASSWORD)["accessToken"]
    verified = client.post("/v1/auth/verify-email", json={"token": verification_link})  # voids reset links only
    assert (verified.status_code, verified.get_json()["emailVerified"]) == (200, True)


def test_expired_reset_token_is_refused(client, app, ada, mail_dir):
    forgot(client, "ada@example.test")
    token = token_from(last_email(mail_dir, "ada@example.test"))
    expire_one_time_tokens(app)

    expect_problem(reset(client, token), 400, "invalid_token")
    assert login(client, "ada@example.test")["userId"] == ada["userId"]


@pytest.mark.parametrize(
    ("new_password", "message"),
    [
        ("short", "Use at least 10 characters."),
        ("password123", "This password is too common."),
        ("ada@example.test", "Do not use your email address."),
    ],
)
def test_weak_new_password_is_refused_without_spending_the_token(client, ada, mail_dir, new_password, message):
    forgot(client, "ada@example.test")
    token = token_from(last_email(mail_dir, "ada@example.test"))

    body = expect_problem(reset(client, token, new_password), 400, "validation_error")

    assert body["errors"] == {"newPassword": [message]}
    assert login(client, "ada@example.test")["userId"] == ada["userId"]
    assert reset(client, token).status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"token": "abc"}, "newPassword"),
        ({"newPassword": NEW_PASSWORD}, "token"),
        ({"token": "", "newPassword": "x"}, "token"),
    ],
)
def test_reset_validates_the_body(client, body, field):
    problem = expect_problem(client.post("/v1/auth/password/reset", json=body), 400, "validation_error")
    assert field in problem["errors"]


def test_a_mail_outage_neither_fails_the_request_nor_reveals_the_account(app, client, ada, monkeypatch, caplog):
    class BrokenMailer:
        def send(self, message):
            raise MailDeliveryFailed("the relay is down")

    monkeypatch.setattr(app.extensions["accounts"], "mailer", BrokenMailer())

    with caplog.at_level(logging.ERROR, logger="app.accounts.service"):
        known, unknown = forgot(client, "ada@example.test"), forgot(client, "nobody@example.test")

    assert (known.status_code, unknown.status_code) == (202, 202)
    assert known.get_data() == unknown.get_data()
    (logged,) = [record for record in caplog.records if record.name == "app.accounts.service"]
    assert logged.getMessage() == "could not send 'Reset your password' to ada@example.test"
    assert str(logged.exc_info[1]) == "the relay is down"


# --- two-factor authentication -------------------------------------------------------------


def test_mfa_setup_returns_a_provisioning_uri(client, ada):
    token = login(client, "ada@example.test")["accessToken"]

    response = client.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=auth(token))

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    setup = response.get_json()
    assert set(setup) == {"secret", "otpauthUri"}
    assert setup["otpauthUri"].startswith("otpauth://totp/")
    assert "issuer=Storefront" in setup["otpauthUri"]
    assert f"secret={setup['secret']}" in setup["otpauthUri"]
    assert pyotp.parse_uri(setup["otpauthUri"]).name == "ada@example.test"
    assert me(client, token).get_json()["mfaEnabled"] is False  # not on until confirmed


def test_enabling_mfa_needs_a_setup_and_a_right_code(client, ada):
    token = login(client, "ada@example.test")["accessToken"]
    enable = lambda otp: client.post(  # noqa: E731
        "/v1/auth/mfa/enable", json={"otp": otp, "password": PASSWORD}, headers=auth(token)
    )

    expect_problem(enable("123456"), 409, "mfa_not_set_up", detail="Call POST /v1/auth/mfa/setup first.")
    secret = client.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=auth(token)).get_json()["secret"]
    wrong = enable(wrong_codes(secret)[0])
    expect_problem(wrong, 401, "invalid_otp", detail="The code is wrong, expired or already used.")
    assert me(client, token).get_json()["mfaEnabled"] is False
    problem = expect_problem(enable("12ab56"), 400, "validation_error")
    assert list(problem["errors"]) == ["otp"]

    enabled = enable(pyotp.TOTP(secret).now())

    assert enabled.status_code == 200
    assert enabled.get_json()["mfaEnabled"] is True
    assert me(client, token).get_json()["mfaEnabled"] is True
    again = enable(pyotp.TOTP(secret).now())
    expect_problem(again, 409, "mfa_already_enabled", detail="Two-factor authentication is already on.")
    setup_again = client.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=auth(token))
    detail = "Two-factor authentication is already on; disable it first."
    expect_problem(setup_again, 409, "mfa_already_enabled", detail=detail)


def test_login_with_mfa_needs_a_fresh_code(client, ada):
    secret = enable_mfa(client, login(client, "ada@example.test")["accessToken"])
    totp = pyotp.TOTP(secret)

    without = log_in(client, "ada@example.test")
    expect_problem(without, 401, "mfa_required", detail="Send the code from your authenticator app as `otp`.")
    code = totp.now()
    assert login(client, "ada@example.test", otp=code)["userId"] == ada["userId"]
    reused = client.post("/v1/auth/login", json={"email": "ada@example.test", "password": PASSWORD, "otp": code})
    expect_problem(reused, 401, "invalid_otp", detail="The code is wrong, expired or already used.")
    next_step = totp.at(time.time() + 30)
    assert login(client, "ada@example.test", otp=next_step)["userId"] == ada["userId"]


def test_a_code_more_than_one_step_ahead_is_refused(client, ada):
    """One step (30 s) of clock drift is allowed, no more."""
    totp = pyotp.TOTP(enable_mfa(client, login(client, "ada@example.test")["accessToken"]))
    if time.time() % 30 > 28:  # the server in this step too
        time.sleep(30 - time.time() % 30 + 0.1)
    now = time.time()

    too_far = client.post(
        "/v1/auth/login", json={"email": "ada@example.test", "password": PASSWORD, "otp": totp.at(now + 60)}
    )

    expect_problem(too_far, 401, "invalid_otp")
    assert login(client, "ada@example.test", otp=totp.at(now + 30))["userId"] == ada["userId"]


def change_password_during_the_check(app, monkeypatch, new_password: str) -> None:
    """While the next login checks its password, the account's password becomes `new_password`."""
    verify, changes = passwords.verify_password, [passwords.hash_password(new_password)]

    def verify_while_the_password_changes(password_hash, password):
        right = verify(password_hash, password)
        if changes:
            with app.app_context():
                db.session.execute(update(User).values(password_hash=changes.pop()))
                db.session.commit()
        return right

    monkeypatch.setattr(passwords, "verify_password", verify_while_the_password_changes)


def test_a_login_with_a_password_changed_meanwhile_is_refused(app, client, ada, monkeypatch):
    change_password_during_the_check(app, monkeypatch, NEW_PASSWORD)

    expect_problem(log_in(client, "ada@example.test"), 401, "invalid_credentials", detail="Wrong email or password.")


def test_a_login_with_a_password_hashed_anew_meanwhile_goes_on(app, client, ada, monkeypatch):
    """The same password hashed again (another login rehashing it at a new cost) is still right."""
    change_password_during_the_check(app, monkeypatch, PASSWORD)

    assert log_in(client, "ada@example.test").status_code == 200


def test_a_login_without_a_code_is_refused_once_mfa_was_turned_on_during_it(app, client, ada, monkeypatch):
    verify = passwords.verify_password

    def verify_while_mfa_is_turned_on(password_hash, password):
        right = verify(password_hash, password)
        with app.app_context():
            db.session.execute(update(User).values(mfa_secret=pyotp.random_base32(), mfa_enabled_at=utcnow()))
            db.session.commit()
        return right

    monkeypatch.setattr(passwords, "verify_password", verify_while_mfa_is_turned_on)

    detail = "Send the code from your authenticator app as `otp`."
    expect_problem(log_in(client, "ada@example.test"), 401, "mfa_required", detail=detail)


def test_a_password_hashed_at_another_cost_is_hashed_anew_at_the_login(app, client, ada):
    older = PasswordHasher(time_cost=2, memory_cost=8192).hash(PASSWORD)
    with app.app_context():
        db.session.execute(update(User).values(password_hash=older))
        db.session.commit()

    assert log_in(client, "ada@example.test").status_code == 200

    renewed = user_row(app, "ada@example.test").password_hash
    assert renewed != older
    assert not passwords.needs_rehash(renewed)
    assert log_in(client, "ada@example.test").status_code == 200


def test_no_code_is_accepted_once_mfa_was_turned_off_during_the_login(app, client, ada, monkeypatch):
    """The code is checked against the secret the account has then: with none, none is right."""
    secret = enable_mfa(client, login(client, "ada@example.test")["accessToken"])
    verify = passwords.verify_password

    def verify_while_mfa_is_turned_off(password_hash, password):
        right = verify(password_hash, password)
        with app.app_context():
            db.session.execute(update(User).values(mfa_secret=None, mfa_enabled_at=None))
            db.session.commit()
        return right

    monkeypatch.setattr(passwords, "verify_password", verify_while_mfa_is_turned_off)
    body = {"email": "ada@example.test", "password": PASSWORD, "otp": wrong_codes(secret)[0]}

    expect_problem(client.post("/v1/auth/login", json=body), 401, "invalid_otp")


def test_a_code_used_by_one_account_leaves_the_others_codes_alone(client, mail_dir, ada):
    """Each account remembers its own last accepted step: another's login in the same 30 s
    does not make this account's current code look replayed."""
    register_and_verify(client, mail_dir, "bob@example.test")
    secrets = {who: enable_mfa(client, login(client, f"{who}@example.test")["accessToken"]) for who in ("ada", "bob")}
    step = time.time()
    if step % 30 > 27:  # both logins in one step
        time.sleep(30 - step % 30 + 0.1)
        step = time.time()

    for who in ("ada", "bob"):
        assert login(client, f"{who}@example.test", otp=pyotp.TOTP(secrets[who]).at(step))["accessToken"]


def test_wrong_password_with_mfa_on_is_still_invalid_credentials(client, ada):
    secret = enable_mfa(client, login(client, "ada@example.test")["accessToken"])

    wrong = client.post(
        "/v1/auth/login",
        json={"email": "ada@example.test", "password": "Wrong-Password-1", "otp": pyotp.TOTP(secret).now()},
    )

    expect_problem(wrong, 401, "invalid_credentials")


def test_wrong_codes_count_towards_the_lockout(client, ada):
    secret = enable_mfa(client, login(client, "ada@example.test")["accessToken"])
    for code in wrong_codes(secret)[:5]:
        body = {"email": "ada@example.test", "password": PASSWORD, "otp": code}
        expect_problem(client.post("/v1/auth/login", json=body), 401, "invalid_otp")

    locked = client.post(
        "/v1/auth/login", json={"email": "ada@example.test", "password": PASSWORD, "otp": pyotp.TOTP(secret).now()}
    )
    expect_problem(locked, 429, "login_locked")


def test_disabling_mfa_needs_the_current_password(client, ada):
    token = login(client, "ada@example.test")["accessToken"]
    disable = lambda **body: client.post("/v1/auth/mfa/disable", json=body, headers=auth(token))  # noqa: E731
    expect_problem(disable(password=PASSWORD), 409, "mfa_not_set_up", detail="Two-factor authentication is not on.")
    secret = enable_mfa(client, token)

    wrong = expect_problem(disable(password="Wrong-Password-1"), 401, "invalid_credentials")
    assert wrong["field"] == "password"
    for body in ({}, {"otp": pyotp.TOTP(secret).now()}):  # a code alone no longer does
        problem = expect_problem(disable(**body), 400, "validation_error")
        assert list(problem["errors"]) == ["password"]
    assert me(client, token).get_json()["mfaEnabled"] is True

    disabled = disable(password=PASSWORD)

    assert disabled.status_code == 200
    assert disabled.get_json()["mfaEnabled"] is False
    assert login(client, "ada@example.test")["userId"] == ada["userId"]  # no code needed any more


def test_disabling_mfa_with_the_password_and_a_code_checks_the_code(client, ada):
    token = login(client, "ada@example.test")["accessToken"]
    secret = enable_mfa(client, token)
    disable = lambda otp: client.post(  # noqa: E731
        "/v1/auth/mfa/disable", json={"password": PASSWORD, "otp": otp}, headers=auth(token)
    )

    wrong = disable(wrong_codes(secret)[0])
    expect_problem(wrong, 401, "invalid_otp", detail="The code is wrong, expired or already used.")
    disabled = disable(pyotp.TOTP(secret).now())

    assert disabled.status_code == 200
    assert disabled.get_json()["mfaEnabled"] is False


# --- guests --------------------------------------------------------------------------------


def test_guest_session(client, ada):
    response = client.post("/v1/auth/guest")

    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    guest = response.get_json()
    assert set(guest) == SESSION_FIELDS
    assert guest["refreshToken"] is None
    assert guest["userId"].startswith("guest:")
    assert (guest["expiresIn"], guest["tokenType"]) == (900, "Bearer")
    claims = claims_of(guest["accessToken"])
    assert claims["roles"] == ["guest"]
    assert claims["sub"] == guest["userId"]

    for method, path in [("get", "/v1/users/me"), ("post", "/v1/auth/mfa/setup"), ("post", "/v1/auth/logout-all")]:
        expect_problem(getattr(client, method)(path, headers=auth(guest["accessToken"])), 403, "forbidden")
    expect_problem(client.get("/v1/users", headers=auth(guest["accessToken"])), 403, "forbidden")

    # another user's logout-all leaves the guest alone: still 403 (valid token), not 401 token_revoked
    ada_token = login(client, "ada@example.test")["accessToken"]
    assert client.post("/v1/auth/logout-all", headers=auth(ada_token)).status_code == 204
    expect_problem(me(client, guest["accessToken"]), 403, "forbidden")


def test_guest_can_log_out(client):
    guest = client.post("/v1/auth/guest").get_json()

    assert client.post("/v1/auth/logout", headers=auth(guest["accessToken"])).status_code == 204

    expect_problem(me(client, guest["accessToken"]), 401, "token_revoked")


def test_each_guest_is_someone_else(client):
    first, second = (client.post("/v1/auth/guest").get_json() for _ in range(2))
    assert first["userId"] != second["userId"]


# --- /v1/users/me --------------------------------------------------------------------------


def test_read_and_change_own_profile(client, ada):
    token = login(client, "ada@example.test")["accessToken"]

    profile = me(client, token)
    assert profile.status_code == 200
    assert profile.headers["Cache-Control"] == "no-store"
    assert profile.get_json() == {**ada, "updatedAt": profile.get_json()["updatedAt"]}
    assert profile.get_json()["displayName"] == ""

    changed = client.patch("/v1/users/me", json={"displayName": "  Ada Lovelace  "}, headers=auth(token))

    assert changed.status_code == 200
    assert changed.get_json()["displayName"] == "Ada Lovelace"
    assert me(client, token).get_json()["displayName"] == "Ada Lovelace"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"roles": ["admin"]}, "roles"),
        ({"displayName": "Ada", "roles": ["admin"]}, "roles"),
        ({"displayName": "Ada", "isActive": False}, "isActive"),
        ({"displayName": "Ada", "email": "eve@example.test"}, "email"),
        ({"displayName": "x" * 101}, "displayName"),
        ({}, "displayName"),
    ],
)
def test_profile_patch_refuses_other_fields(client, app, ada, body, field):
    token = login(client, "ada@example.test")["accessToken"]

    problem = expect_problem(client.patch("/v1/users/me", json=body, headers=auth(token)), 400, "validation_error")

    assert field in problem["errors"]
    after = me(client, token).get_json()
    assert (after["roles"], after["email"], after["displayName"], after["isActive"]) == (
        ["customer"],
        "ada@example.test",
        "",
        True,
    )
    assert user_row(app, "ada@example.test").roles == ["customer"]


def test_me_needs_a_token(client):
    problem = expect_problem(client.get("/v1/users/me"), 401, "token_missing")
    assert problem["detail"]


def test_change_password(client, ada):
    session = login(client, "ada@example.test")
    other = login(client, "ada@example.test")
    change = lambda current, new: client.post(  # noqa: E731
        "/v1/users/me/password",
        json={"currentPassword": current, "newPassword": new},
        headers=auth(session["accessToken"]),
    )

    wrong = expect_problem(change("Wrong-Password-1", NEW_PASSWORD), 401, "invalid_credentials")
    assert wrong["field"] == "currentPassword"
    weak = expect_problem(change(PASSWORD, "password123"), 400, "validation_error")
    assert list(weak["errors"]) == ["newPassword"]
    assert me(client, other["accessToken"]).status_code == 200  # the failures changed nothing

    changed = change(PASSWORD, NEW_PASSWORD)

    assert changed.status_code == 200
    fresh = changed.get_json()
    assert set(fresh) == SESSION_FIELDS
    assert me(client, fresh["accessToken"]).status_code == 200
    assert refresh(client, fresh["refreshToken"]).status_code == 200
    for old in (session, other):
        expect_problem(me(client, old["accessToken"]), 401, "token_revoked")
        expect_problem(refresh(client, old["refreshToken"]), 401, "token_revoked")
    expect_problem(log_in(client, "ada@example.test"), 401, "invalid_credentials")
    assert login(client, "ada@example.test", NEW_PASSWORD)["userId"] == ada["userId"]


# --- administration ------------------------------------------------------------------------


def test_admin_lists_users_page_by_page(client, mail_dir, admin_headers):
    for name in ("ada", "bob", "cy"):
        register(client, f"{name}@example.test")

    first = client.get("/v1/users", query_string={"page": 1, "page_size": 3}, headers=admin_headers)
    second = client.get("/v1/users", query_string={"page": 2, "page_size": 3}, headers=admin_headers)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["Cache-Control"] == "no-store"
    pagination = json.loads(first.headers["X-Pagination"])
    assert (pagination["total"], pagination["total_pages"], pagination["page"]) == (4, 2, 1)
    assert json.loads(second.headers["X-Pagination"])["page"] == 2
    emails = [user["email"] for user in first.get_json() + second.get_json()]
    assert sorted(emails) == ["ada@example.test", "admin-1@example.test", "bob@example.test", "cy@example.test"]
    assert all(set(user) == USER_FIELDS for user in first.get_json())
    assert "password" not in first.get_data(as_text=True).lower()


def test_pages_of_users_registered_at_the_same_moment_hold_each_user_once(app, client, admin_headers):
    names = [f"user{n}@example.test" for n in range(9)]
    for name in names:
        register(client, name)
    with app.app_context():
        db.session.execute(update(User).values(created_at=utcnow()))  # one moment for all
        db.session.commit()

    pages = [
        client.get("/v1/users", query_string={"page": page, "page_size": 2}, headers=admin_headers).get_json()
        for page in range(1, 6)
    ]

    assert sorted(user["email"] for page in pages for user in page) == sorted([*names, "admin-1@example.test"])


def test_only_admins_list_users(client, customer_headers):
    expect_problem(client.get("/v1/users", headers=customer_headers), 403, "forbidden")
    expect_problem(client.get("/v1/users"), 401, "token_missing")


def test_admin_promotes_a_user_who_gets_the_role_at_the_next_login(client, ada, admin_headers):
    old = login(client, "ada@example.test")

    promoted = patch_user(client, admin_headers, ada["userId"], roles=["admin"])

    assert promoted.status_code == 200
    assert promoted.headers["Cache-Control"] == "no-store"
    assert promoted.get_json()["roles"] == ["admin", "customer"]
    expect_problem(me(client, old["accessToken"]), 401, "token_revoked")
    expect_problem(refresh(client, old["refreshToken"]), 401, "token_revoked")
    new = login(client, "ada@example.test")
    assert sorted(claims_of(new["accessToken"])["roles"]) == ["admin", "customer"]
    assert client.get("/v1/users", headers=auth(new["accessToken"])).status_code == 200


def test_admin_demotes_an_admin(client, ada, admin_headers):
    patch_user(client, admin_headers, ada["userId"], roles=["admin"])
    admin_token = login(client, "ada@example.test")["accessToken"]

    assert patch_user(client, admin_headers, ada["userId"], roles=["customer"]).get_json()["roles"] == ["customer"]

    expect_problem(client.get("/v1/users", headers=auth(admin_token)), 401, "token_revoked")
    new_token = login(client, "ada@example.test")["accessToken"]
    expect_problem(client.get("/v1/users", headers=auth(new_token)), 403, "forbidden")


def test_admin_disables_and_enables_an_account(client, ada, admin_headers):
    session = login(client, "ada@example.test")

    disabled = patch_user(client, admin_headers, ada["userId"], isActive=False)

    assert disabled.status_code == 200
    assert disabled.get_json()["isActive"] is False
    expect_problem(me(client, session["accessToken"]), 401, "token_revoked")
    expect_problem(refresh(client, session["refreshToken"]), 401, "token_revoked")
    expect_problem(log_in(client, "ada@example.test"), 403, "account_disabled")

    assert patch_user(client, admin_headers, ada["userId"], isActive=True).get_json()["isActive"] is True
    assert me(client, login(client, "ada@example.test")["accessToken"]).status_code == 200


@pytest.mark.parametrize("changes", [{"isActive": False}, {"roles": ["customer"]}, {"roles": []}])
def test_an_admin_cannot_lock_themselves_out(client, ada, admin_headers, changes):
    """The last admin would otherwise be one request away from an API nobody can administer."""
    patch_user(client, admin_headers, ada["userId"], roles=["admin"])
    headers = {"Authorization": f"Bearer {login(client, 'ada@example.test')['accessToken']}"}

    expect_problem(patch_user(client, headers, ada["userId"], **changes), 409, "own_admin_access")

    assert client.get("/v1/users", headers=headers).status_code == 200  # still an admin, still signed in
    kept = patch_user(client, headers, ada["userId"], roles=["admin", "customer"], isActive=True)
    assert kept.get_json()["roles"] == ["admin", "customer"]


@pytest.mark.parametrize("user_id", ["6f1c2b9e-0d4a-4c7e-9a51-3b2f8e7d6c5a", "not-a-uuid", "12345"])
def test_admin_patch_of_an_unknown_user_is_404(client, admin_headers, user_id):
    body = expect_problem(patch_user(client, admin_headers, user_id, isActive=False), 404, "user_not_found")
    assert body["userId"] == user_id


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"roles": ["root"]}, "roles.0"),
        ({"roles": ["customer", "guest"]}, "roles.1"),
        ({"roles": "admin"}, "roles"),
        ({"roles": ["admin", "customer", "admin"]}, "roles"),
        ({"isActive": "maybe"}, "isActive"),
        ({"email": "eve@example.test"}, "email"),
        ({}, "_schema"),
    ],
)
def test_admin_patch_validates_the_body(client, app, ada, admin_headers, changes, field):
    problem = expect_problem(patch_user(client, admin_headers, ada["userId"], **changes), 400, "validation_error")

    assert field in problem["errors"]
    row = user_row(app, "ada@example.test")
    assert (row.roles, row.is_active) == (["customer"], True)


@pytest.mark.parametrize("target", ["other", "self"])
def test_customers_cannot_use_the_admin_patch(client, app, ada, mail_dir, target):
    bob = register_and_verify(client, mail_dir, "bob@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    user_id = bob["userId"] if target == "other" else ada["userId"]

    expect_problem(patch_user(client, auth(token), user_id, roles=["admin"]), 403, "forbidden")
    expect_problem(patch_user(client, auth(token), user_id, isActive=False), 403, "forbidden")

    assert user_row(app, "bob@example.test").roles == ["customer"]
    assert user_row(app, "ada@example.test").roles == ["customer"]
    assert me(client, token).status_code == 200


# --- flask create-admin --------------------------------------------------------------------

ADMIN_PASSWORD = "LongEnough-Passw0rd"


@pytest.fixture
def cli(runner):
    def invoke(*args: str, stdin: str | None = None):
        return runner.invoke(args=list(args), input=stdin)

    return invoke


def test_create_admin_from_stdin(cli, client):
    result = cli("create-admin", "--email", "Root@X.test", "--password-stdin", stdin=f"{ADMIN_PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "Administrator root@x.test" in result.output
    session = login(client, "root@x.test", ADMIN_PASSWORD)
    assert sorted(claims_of(session["accessToken"])["roles"]) == ["admin", "customer"]
    assert client.get("/v1/users", headers=auth(session["accessToken"])).status_code == 200
    assert me(client, session["accessToken"]).get_json()["emailVerified"] is True


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "Use at least 10 characters."),
        ("password123", "This password is too common."),
        ("a@x.test", "Do not use your email address."),
    ],
)
def test_create_admin_refuses_a_weak_password(cli, app, password, message):
    result = cli("create-admin", "--email", "a@x.test", "--password-stdin", stdin=f"{password}\n")

    assert result.exit_code == 1
    assert message in result.output
    assert user_row(app, "a@x.test") is None


def test_create_admin_prompts_with_confirmation(cli, client):
    result = cli("create-admin", "--email", "a@x.test", stdin=f"{ADMIN_PASSWORD}\n" * 2)

    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output
    assert ADMIN_PASSWORD not in result.output  # hidden input
    assert sorted(claims_of(login(client, "a@x.test", ADMIN_PASSWORD)["accessToken"])["roles"]) == ["admin", "customer"]


def test_create_admin_prompt_refuses_a_mismatched_confirmation(cli, app):
    result = cli("create-admin", "--email", "a@x.test", stdin=f"{ADMIN_PASSWORD}\nsomething-else-1\n")

    assert result.exit_code != 0
    assert "do not match" in result.output
    assert user_row(app, "a@x.test") is None


def test_create_admin_promotes_an_existing_account(cli, client):
    register(client, "ada@example.test")  # not verified yet

    result = cli("create-admin", "--email", "ada@example.test", "--password-stdin", stdin=f"{NEW_PASSWORD}\n")

    assert result.exit_code == 0, result.output
    session = login(client, "ada@example.test", NEW_PASSWORD)
    assert me(client, session["accessToken"]).get_json()["roles"] == ["admin", "customer"]


def test_create_admin_runs_under_the_flask_test_runner(runner, client):
    result = runner.invoke(args=["create-admin", "--email", "a@x.test"], input=f"{ADMIN_PASSWORD}\n" * 2)

    assert result.exit_code == 0, repr(result.exception)
    assert login(client, "a@x.test", ADMIN_PASSWORD)["userId"]


def test_password_stdin_uses_no_deprecated_click_api(cli, client):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        result = cli("create-admin", "--email", "a@x.test", "--password-stdin", stdin=f"{ADMIN_PASSWORD}\n")

    assert result.exit_code == 0, repr(result.exception)
    assert login(client, "a@x.test", ADMIN_PASSWORD)["userId"]


# --- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/v1/health", None, 200),
        ("get", "/v1/users/me", None, 401),
        ("post", "/v1/auth/login", {"email": "nope"}, 400),
        ("post", "/v1/auth/guest", None, 201),
        ("get", "/v1/no-such-route", None, 404),
    ],
)
def test_security_headers_are_on_every_response(client, method, path, body, status):
    response = getattr(client, method)(path, json=body)

    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/v1/auth/login", {"email": "ada@example.test", "password": PASSWORD}, 200),
        ("post", "/v1/auth/login", {"email": "ada@example.test", "password": "Wrong-Password-1"}, 401),
        ("post", "/v1/auth/login", {"email": "nope"}, 400),
        ("post", "/v1/auth/register", {"email": "new@example.test", "password": PASSWORD}, 201),
        ("post", "/v1/auth/register", {"email": "ada@example.test", "password": PASSWORD}, 201),
        ("post", "/v1/auth/verify-email/resend", {"email": "ada@example.test"}, 202),
        ("post", "/v1/auth/logout", None, 401),
        ("get", "/v1/users/me", None, 401),
        ("get", "/v1/users", None, 401),
        ("patch", "/v1/users/me", {"displayName": "Ada"}, 401),
    ],
)
def test_auth_and_user_responses_are_not_stored(client, ada, method, path, body, status):
    response = getattr(client, method)(path, json=body)

    assert response.status_code == status
    assert response.headers["Cache-Control"] == "no-store"


def test_health_is_cacheable_by_default(client):
    assert client.get("/v1/health").headers.get("Cache-Control") != "no-store"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", "/v1/auth/login", 405), ("get", "/v1/users/some-id", 405), ("get", "/v1/auth/no-such-route", 404)],
)
def test_routing_errors_under_auth_and_users_are_not_stored(client, method, path, status):
    response = getattr(client, method)(path)

    expect_problem(response, status, "method_not_allowed" if status == 405 else "not_found")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers.get("Cache-Control") == "no-store"


# --- JWT hardening -------------------------------------------------------------------------


@pytest.fixture
def genuine(client, ada) -> dict:
    """The claims of a genuine access token of ada."""
    return claims_of(login(client, "ada@example.test")["accessToken"])


def forged(claims: dict, key: str | None = TEST_SECRET, algorithm: str = "HS256", **changes) -> str:
    payload = {name: value for name, value in {**claims, **changes}.items() if value is not None}
    return pyjwt.encode(payload, key, algorithm=algorithm)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda claims: forged(claims, iss="someone-else"), id="wrong-iss"),
        pytest.param(lambda claims: forged(claims, aud="another-api"), id="wrong-aud"),
        pytest.param(lambda claims: forged(claims, aud=None), id="no-aud"),
        pytest.param(lambda claims: forged(claims, iss=None), id="no-iss"),
        pytest.param(lambda claims: forged(claims, key=None, algorithm="none"), id="alg-none"),
        pytest.param(
            lambda claims: forged(claims, algorithm="HS512"),
            id="other-alg",
            marks=pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
        ),
        pytest.param(lambda claims: forged(claims, key=OTHER_SECRET), id="other-key"),
        pytest.param(lambda claims: forged(claims, key=OTHER_SECRET, roles=["admin"]), id="escalated-other-key"),
        pytest.param(lambda claims: "not.a.jwt", id="garbage"),
    ],
)
def test_tampered_tokens_are_refused(client, genuine, make):
    token = make(genuine)

    response = me(client, token)

    expect_problem(response, 401, "token_invalid")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="storefront"'
    assert response.headers["Cache-Control"] == "no-store"


def test_a_token_signed_with_the_right_key_is_accepted(client, genuine):
    """The control of the table above: the forging helper itself makes valid tokens."""
    assert me(client, forged(genuine)).status_code == 200


def test_a_payload_changed_after_signing_is_refused(client, ada):
    token = login(client, "ada@example.test")["accessToken"]
    header, _, signature = token.split(".")
    payload = pyjwt.utils.base64url_encode(json.dumps({**claims_of(token), "roles": ["admin"]}).encode()).decode()

    expect_problem(client.get("/v1/users", headers=auth(f"{header}.{payload}.{signature}")), 401, "token_invalid")


def test_expired_token_is_refused(app, client, ada):
    with app.app_context():
        token = create_access_token(
            identity=ada["userId"],
            additional_claims={"roles": ["customer"], "gen": 0},
            expires_delta=timedelta(seconds=-1),
        )

    response = me(client, token)

    expect_problem(response, 401, "token_expired")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="storefront"'


def test_a_token_of_a_deleted_user_is_revoked(app, client, ada):
    token = login(client, "ada@example.test")["accessToken"]
    with app.app_context():
        db.session.delete(db.session.get(User, uuid.UUID(ada["userId"])))
        db.session.commit()

    expect_problem(me(client, token), 401, "token_revoked")


# --- with other settings (a second app each; keep these last) -----------------------------


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    created: list[str] = []
    yield client, created
    for pattern in created:
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    client.close()


def test_revocation_in_redis(other_app, redis_url, redis_client, mail_dir):
    store, cleanup = redis_client
    client = other_app(redis_url=redis_url).test_client()
    run = uuid.uuid4()
    address, ip = f"redis-{run.hex[:12]}@example.test", f"10.66.{run.bytes[0]}.{run.bytes[1]}"
    client.environ_base["REMOTE_ADDR"] = ip  # every request: its rate limit counters can be found and removed
    cleanup.extend([f"*{address}*", f"*{ip}*"])
    user = register_and_verify(client, mail_dir, address)
    generation_key = f"storefront:generation:{user['userId']}"
    cleanup.append(generation_key)
    session = login(client, address)
    revoked_key = f"storefront:revoked:{claims_of(session['accessToken'])['jti']}"
    cleanup.append(revoked_key)
    assert me(client, session["accessToken"]).status_code == 200
    assert not store.exists(revoked_key)

    assert client.post("/v1/auth/logout", headers=auth(session["accessToken"])).status_code == 204

    expect_problem(me(client, session["accessToken"]), 401, "token_revoked")
    assert store.exists(revoked_key)
    assert 0 < store.ttl(revoked_key) <= 901  # kept only as long as the token would live
    expect_problem(refresh(client, session["refreshToken"]), 401, "token_revoked")
    # logout-all bumps the session generation that Redis caches
    other = login(client, address)
    assert int(store.get(generation_key)) == 0
    assert client.post("/v1/auth/logout-all", headers=auth(other["accessToken"])).status_code == 204
    assert int(store.get(generation_key)) == 1
    expect_problem(me(client, other["accessToken"]), 401, "token_revoked")
    newest = login(client, address)
    assert me(client, newest["accessToken"]).status_code == 200
    # so does a password change, at once, for every instance that reads Redis
    body = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    changed = client.post("/v1/users/me/password", json=body, headers=auth(newest["accessToken"]))
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert int(store.get(generation_key)) == 2
    expect_problem(me(client, newest["accessToken"]), 401, "token_revoked")
    assert me(client, changed.get_json()["accessToken"]).status_code == 200
    # and so does a password reset
    forgot(client, address)
    assert reset(client, token_from(last_email(mail_dir, address)), "Reset-Password-3").status_code == 204
    assert int(store.get(generation_key)) == 3
    expect_problem(me(client, changed.get_json()["accessToken"]), 401, "token_revoked")


def test_admin_changes_keep_the_generation_cached_in_redis_current(
    other_app, redis_url, redis_client, mail_dir, admin_headers
):
    """A change that ends the sessions publishes the new generation at once; one that does not
    leaves the cached generation as it was, and the tokens working."""
    store, cleanup = redis_client
    client = other_app(redis_url=redis_url).test_client()
    run = uuid.uuid4()
    address, ip = f"redis-{run.hex[:12]}@example.test", f"10.67.{run.bytes[0]}.{run.bytes[1]}"
    client.environ_base["REMOTE_ADDR"] = ip
    admin_id = claims_of(admin_headers["Authorization"].removeprefix("Bearer "))["sub"]
    cleanup.extend([f"*{address}*", f"*{ip}*", f"storefront:generation:{admin_id}"])
    user = register_and_verify(client, mail_dir, address)
    generation_key = f"storefront:generation:{user['userId']}"
    cleanup.append(generation_key)
    session = login(client, address)
    assert me(client, session["accessToken"]).status_code == 200
    assert int(store.get(generation_key)) == 0

    assert patch_user(client, admin_headers, user["userId"], isActive=True).status_code == 200

    assert int(store.get(generation_key)) == 0
    assert me(client, session["accessToken"]).status_code == 200

    assert patch_user(client, admin_headers, user["userId"], roles=["admin"]).status_code == 200

    assert int(store.get(generation_key)) == 1
    expect_problem(me(client, session["accessToken"]), 401, "token_revoked")


def test_short_access_ttl_and_a_lock_that_lifts_by_itself(other_app, settings, mail_dir):
    auth_settings = dataclasses.replace(settings.auth, access_ttl=30, login_max_failures=2, login_lock_seconds=2)
    client = other_app(auth=auth_settings).test_client()
    register_and_verify(client, mail_dir, "ada@example.test")

    session = login(client, "ada@example.test")
    claims = claims_of(session["accessToken"])
    assert (session["expiresIn"], claims["exp"] - claims["iat"]) == (30, 30)

    for _ in range(2):
        expect_problem(log_in(client, "ada@example.test", "Wrong-Password-1"), 401, "invalid_credentials")
    locked = log_in(client, "ada@example.test")
    expect_problem(locked, 429, "login_locked")
    assert 0 < int(locked.headers["Retry-After"]) <= 2

    time.sleep(2.2)
    assert log_in(client, "ada@example.test").status_code == 200


def test_a_lock_asks_for_a_retry_no_later_than_it_lifts(other_app, settings, mail_dir):
    """What the port answers (before the gateway's rate limiter rewrites the header): the
    seconds left, rounded up, and at least 1."""
    auth_settings = dataclasses.replace(settings.auth, login_max_failures=1, login_lock_seconds=1)
    app = other_app(auth=auth_settings)
    register_and_verify(app.test_client(), mail_dir, "ada@example.test")
    wrong = accounts.LoginAttempt(email="ada@example.test", password="Wrong-Password-1", client_ip="10.0.9.1")
    with app.app_context():
        with pytest.raises(accounts.InvalidCredentials):
            accounts.log_in(attempt=wrong)
        with pytest.raises(accounts.LoginLocked) as locked:
            accounts.log_in(attempt=wrong)

    assert locked.value.headers == {"Retry-After": "1"}


def test_auth_rate_limit(other_app):
    client = other_app(auth_rate_limit="3 per minute").test_client()
    body = {"email": "nobody@example.test", "password": PASSWORD}

    answers = [client.post("/v1/auth/login", json=body) for _ in range(4)]

    assert [response.status_code for response in answers[:3]] == [401, 401, 401]
    limited = answers[3]
    expect_problem(limited, 429, "rate_limited")
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["RateLimit-Limit"] == "3"  # the standard names (README), not X-RateLimit-*
    assert "X-RateLimit-Limit" not in limited.headers
    assert limited.headers["Cache-Control"] == "no-store"
    # counted per client address
    assert client.post("/v1/auth/login", json=body, **from_ip("10.0.3.1")).status_code == 401


# --- whole-login revocation, stale reset links, lock after reset ---------------------------


def test_logout_also_revokes_access_tokens_issued_earlier_in_the_same_login(client, ada):
    first = login(client, "ada@example.test")
    second = refresh(client, first["refreshToken"]).get_json()
    assert me(client, first["accessToken"]).status_code == 200

    assert client.post("/v1/auth/logout", headers=auth(second["accessToken"])).status_code == 204

    expect_problem(me(client, first["accessToken"]), 401, "token_revoked")
    other_login = login(client, "ada@example.test")
    assert me(client, other_login["accessToken"]).status_code == 200


def test_a_replayed_refresh_token_revokes_the_logins_access_tokens_too(client, ada):
    first = login(client, "ada@example.test")
    second = refresh(client, first["refreshToken"]).get_json()

    expect_problem(refresh(client, first["refreshToken"]), 401, "refresh_token_reused")

    expect_problem(me(client, second["accessToken"]), 401, "token_revoked")


def test_a_new_password_voids_older_reset_links(app, client, mail_dir, ada):
    forgot(client, "ada@example.test")
    older_link = token_from(last_email(mail_dir, "ada@example.test"))
    forgot(client, "ada@example.test")
    newer_link = token_from(last_email(mail_dir, "ada@example.test"))
    assert older_link != newer_link

    assert reset(client, newer_link).status_code == 204

    expect_problem(reset(client, older_link, "Yet-Another-Pass-5"), 400, "invalid_token")
    session = login(client, "ada@example.test", NEW_PASSWORD)
    spent = select(OneTimeToken.token_hash, OneTimeToken.used_at).order_by(OneTimeToken.token_hash)
    with app.app_context():
        used_or_voided = db.session.execute(spent).all()
    body = {"currentPassword": NEW_PASSWORD, "newPassword": "Yet-Another-Pass-5"}
    assert client.post("/v1/users/me/password", json=body, headers=auth(session["accessToken"])).status_code == 200
    with app.app_context():  # a later new password keeps when each link was used or voided
        assert db.session.execute(spent).all() == used_or_voided


def test_a_new_password_voids_only_its_own_accounts_reset_links(client, mail_dir, ada):
    register_and_verify(client, mail_dir, "bob@example.test")
    forgot(client, "bob@example.test")
    bobs_link = token_from(last_email(mail_dir, "bob@example.test"))
    forgot(client, "ada@example.test")

    assert reset(client, token_from(last_email(mail_dir, "ada@example.test"))).status_code == 204

    assert reset(client, bobs_link, "Bobs-New-Pass-6").status_code == 204
    assert login(client, "bob@example.test", "Bobs-New-Pass-6")["accessToken"]


def test_a_password_reset_lifts_the_login_lock(other_app, settings, mail_dir):
    """The account's backstop (failures from any address) locks every address out; a reset
    lifts it, while an address that failed too often itself stays locked until its window ends."""
    auth_settings = dataclasses.replace(settings.auth, login_max_failures=2, login_account_max_failures=3)
    client = other_app(auth=auth_settings).test_client()
    register_and_verify(client, mail_dir, "ada@example.test")
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        wrong = log_in(client, "ada@example.test", "Wrong-Password-1", **from_ip(address))
        expect_problem(wrong, 401, "invalid_credentials")
    expect_problem(log_in(client, "ada@example.test", **from_ip("10.0.0.3")), 429, "login_locked")

    forgot(client, "ada@example.test")
    assert reset(client, token_from(last_email(mail_dir, "ada@example.test"))).status_code == 204

    assert log_in(client, "ada@example.test", NEW_PASSWORD, **from_ip("10.0.0.3")).status_code == 200
    expect_problem(log_in(client, "ada@example.test", NEW_PASSWORD, **from_ip("10.0.0.1")), 429, "login_locked")


def test_the_owners_logins_neither_use_up_nor_enlarge_the_accounts_backstop(other_app, settings, mail_dir):
    """Each attempt counts towards the backstop before its password is checked; a right one is
    taken off again, exactly."""
    auth_settings = dataclasses.replace(settings.auth, login_account_max_failures=3)
    client = other_app(auth=auth_settings).test_client()
    register_and_verify(client, mail_dir, "ada@example.test")
    for _ in range(3):
        assert log_in(client, "ada@example.test", **from_ip("10.0.3.1")).status_code == 200
    for address in ("10.0.3.2", "10.0.3.3", "10.0.3.4"):
        wrong = log_in(client, "ada@example.test", "Wrong-Password-1", **from_ip(address))
        expect_problem(wrong, 401, "invalid_credentials")

    expect_problem(log_in(client, "ada@example.test", **from_ip("10.0.3.1")), 429, "login_locked")


# --- concurrent writes to one account ------------------------------------------------------

CONCURRENT_CALLS = 12


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_concurrent_logouts_everywhere_lose_no_generation(other_app, settings, tmp_path, monkeypatch, store):
    """Each end of every session is a read-modify-write of the user's session generation: its
    unit of work locks the row (PostgreSQL) or takes the write lock (SQLite), so none is lost."""
    url = settings.database_url if store == "postgresql" else f"sqlite:///{tmp_path / 'accounts.db'}"
    app = other_app(database_url=url)
    with app.app_context():
        if store == "sqlite":
            upgrade()
        user_id = accounts.create_admin(email=f"racer-{uuid.uuid4().hex[:8]}@example.test", password=PASSWORD).user_id
    sessions = app.extensions["accounts"].sessions
    end_all = sessions.end_all

    def slow_end_all(user):
        assert user.session_generation >= 0  # read ...
        time.sleep(0.01)  # ... widen the window a lost update needs ...
        return end_all(user)  # ... then write the generation + 1

    monkeypatch.setattr(sessions, "end_all", slow_end_all)

    def log_out_everywhere(_):
        with app.app_context():
            accounts.end_all_sessions(user_id=user_id)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(log_out_everywhere, range(CONCURRENT_CALLS)))
    with app.app_context():
        assert db.session.get(User, uuid.UUID(user_id)).session_generation == CONCURRENT_CALLS
