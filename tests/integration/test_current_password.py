"""Changes to how an account is protected need its current password, not only an access token:
MFA setup, enable and disable, and the password change. A wrong password is 401
`invalid_credentials` naming its field, a missing one 400 `validation_error`, and wrong ones
count in the login lockout of (account, IP), the same counters as logins: after
LOGIN_MAX_FAILURES, 429 `login_locked` here and at the login."""

from __future__ import annotations

import time

import pyotp
import pytest

from tests.integration.test_auth_api import (
    NEW_PASSWORD,
    PASSWORD,
    auth,
    enable_mfa,
    expect_problem,
    from_ip,
    log_in,
    login,
    me,
    register_and_verify,
)

WRONG = "Wrong-Password-1"
THIEF = "198.51.100.23"


@pytest.fixture
def ada_token(client, mail_dir) -> str:
    register_and_verify(client, mail_dir, "ada@example.test")
    return login(client, "ada@example.test")["accessToken"]


def setup(client, token, **body):
    return client.post("/v1/auth/mfa/setup", json=body, headers=auth(token), **from_ip(THIEF))


def change(client, token, current: str | None):
    body = {"newPassword": NEW_PASSWORD} | ({"currentPassword": current} if current is not None else {})
    return client.post("/v1/users/me/password", json=body, headers=auth(token), **from_ip(THIEF))


def test_a_token_alone_cannot_set_up_mfa(client, ada_token):
    missing = expect_problem(setup(client, ada_token), 400, "validation_error")
    assert list(missing["errors"]) == ["password"]
    wrong = expect_problem(
        setup(client, ada_token, password=WRONG), 401, "invalid_credentials", detail="The current password is wrong."
    )
    assert wrong["field"] == "password"

    assert setup(client, ada_token, password=PASSWORD).status_code == 200


def test_a_token_and_a_code_cannot_enable_mfa_without_the_password(client, ada_token):
    secret = setup(client, ada_token, password=PASSWORD).get_json()["secret"]
    enable = lambda **body: client.post(  # noqa: E731
        "/v1/auth/mfa/enable", json=body, headers=auth(ada_token), **from_ip(THIEF)
    )
    if time.time() % 30 > 28:
        time.sleep(2.1)

    missing = expect_problem(enable(otp=pyotp.TOTP(secret).now()), 400, "validation_error")
    assert list(missing["errors"]) == ["password"]
    wrong = expect_problem(enable(otp=pyotp.TOTP(secret).now(), password=WRONG), 401, "invalid_credentials")
    assert wrong["field"] == "password"
    assert me(client, ada_token).get_json()["mfaEnabled"] is False

    assert enable(otp=pyotp.TOTP(secret).now(), password=PASSWORD).get_json()["mfaEnabled"] is True
    for _ in range(5):  # a right password started the address's count again
        expect_problem(enable(otp=pyotp.TOTP(secret).now(), password=WRONG), 401, "invalid_credentials")
    expect_problem(log_in(client, "ada@example.test", **from_ip(THIEF)), 429, "login_locked")  # that address only
    expect_problem(log_in(client, "ada@example.test", **from_ip("203.0.113.10")), 401, "mfa_required")


def test_a_token_and_a_code_cannot_disable_mfa_without_the_password(client, ada_token):
    secret = enable_mfa(client, ada_token)
    disable = lambda **body: client.post(  # noqa: E731
        "/v1/auth/mfa/disable", json=body, headers=auth(ada_token), **from_ip(THIEF)
    )

    missing = expect_problem(disable(otp=pyotp.TOTP(secret).now()), 400, "validation_error")
    assert list(missing["errors"]) == ["password"]
    wrong = expect_problem(disable(password=WRONG), 401, "invalid_credentials")
    assert wrong["field"] == "password"
    assert me(client, ada_token).get_json()["mfaEnabled"] is True
    for _ in range(4):
        expect_problem(disable(password=WRONG), 401, "invalid_credentials")
    expect_problem(log_in(client, "ada@example.test", **from_ip(THIEF)), 429, "login_locked")  # that address only
    expect_problem(log_in(client, "ada@example.test", **from_ip("203.0.113.10")), 401, "mfa_required")


def test_wrong_current_passwords_lock_mfa_changes_and_the_login_from_that_address(client, ada_token):
    for _ in range(5):
        expect_problem(setup(client, ada_token, password=WRONG), 401, "invalid_credentials")

    locked = setup(client, ada_token, password=PASSWORD)  # even the right one

    expect_problem(locked, 429, "login_locked")
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    expect_problem(log_in(client, "ada@example.test", **from_ip(THIEF)), 429, "login_locked")
    assert log_in(client, "ada@example.test", **from_ip("203.0.113.10")).status_code == 200  # the owner


def test_wrong_current_passwords_lock_the_password_change(client, ada_token):
    missing = expect_problem(change(client, ada_token, None), 400, "validation_error")
    assert list(missing["errors"]) == ["currentPassword"]
    for _ in range(5):
        wrong = expect_problem(change(client, ada_token, WRONG), 401, "invalid_credentials")
        assert wrong["field"] == "currentPassword"

    expect_problem(change(client, ada_token, PASSWORD), 429, "login_locked")
    assert log_in(client, "ada@example.test").status_code == 200  # unchanged, from elsewhere


def test_guesses_at_the_login_and_at_a_change_share_one_budget(client, ada_token):
    for _ in range(3):
        expect_problem(log_in(client, "ada@example.test", WRONG, **from_ip(THIEF)), 401, "invalid_credentials")
    for _ in range(2):
        expect_problem(change(client, ada_token, WRONG), 401, "invalid_credentials")

    expect_problem(setup(client, ada_token, password=PASSWORD), 429, "login_locked")


def test_a_right_current_password_starts_the_count_again(client, ada_token):
    for _ in range(4):
        expect_problem(setup(client, ada_token, password=WRONG), 401, "invalid_credentials")
    assert setup(client, ada_token, password=PASSWORD).status_code == 200
    for _ in range(4):
        expect_problem(setup(client, ada_token, password=WRONG), 401, "invalid_credentials")

    assert setup(client, ada_token, password=PASSWORD).status_code == 200


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/auth/mfa/setup", "password"),
        ("/v1/auth/mfa/enable", "password"),
        ("/v1/auth/mfa/disable", "password"),
        ("/v1/users/me/password", "currentPassword"),
    ],
)
def test_the_openapi_document_describes_the_current_password_and_its_errors(client, path, field):
    operation = client.get("/api/openapi.json").get_json()["paths"][path]["post"]

    responses = operation["responses"]
    assert "validation_error" in responses["400"]["description"]
    assert "invalid_credentials" in responses["401"]["description"]
    assert "login_locked" in responses["429"]["description"]
    for status in ("400", "401", "429"):
        assert "application/problem+json" in responses[status]["content"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert (
        field
        in client.get("/api/openapi.json").get_json()["components"]["schemas"][schema["$ref"].split("/")[-1]][
            "required"
        ]
    )
