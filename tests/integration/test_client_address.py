"""Who the client is: the login lockout per (account, client IP) with a per-account backstop, and
the client's address behind TRUSTED_PROXIES proxies (X-Forwarded-For), as rate limits and the
lockout see it. Tests that build an app with other settings come last."""

from __future__ import annotations

import dataclasses

import pytest

from tests.integration.test_auth_api import PASSWORD, from_ip, log_in, register_and_verify
from tests.problems import expect_problem

WRONG = "Wrong-Password-1"
ADA, STRANGER, PROXY = "203.0.113.10", "198.51.100.66", "10.0.0.2"


@pytest.fixture
def ada(client, mail_dir) -> dict:
    return register_and_verify(client, mail_dir, "ada@example.test")


def forwarded(chain: str, peer: str = PROXY) -> dict:
    """A request arriving from `peer` (the proxy) with this X-Forwarded-For."""
    return {"headers": {"X-Forwarded-For": chain}, "environ_base": {"REMOTE_ADDR": peer}}


# --- the lockout per (account, client IP) ----------------------------------------------------


def test_a_strangers_guesses_do_not_lock_the_owner_out(client, ada):
    for _ in range(5):
        expect_problem(log_in(client, "ada@example.test", WRONG, **from_ip(STRANGER)), 401, "invalid_credentials")

    locked = log_in(client, "ada@example.test", **from_ip(STRANGER))
    expect_problem(locked, 429, "login_locked")
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    assert log_in(client, "ada@example.test", **from_ip(ADA)).status_code == 200  # the owner, elsewhere
    assert log_in(client, "Ada@Example.test", **from_ip(ADA)).status_code == 200  # the account, not its spelling


def test_logins_refused_with_the_right_password_are_not_counted(client, mail_dir):
    """Only guesses count: a right password refused for another reason (an unverified email, a
    missing second factor) gives its attempt back."""
    assert client.post("/v1/auth/register", json={"email": "new@example.test", "password": PASSWORD}).status_code == 201
    for _ in range(7):
        expect_problem(log_in(client, "new@example.test"), 403, "email_not_verified")
    expect_problem(log_in(client, "new@example.test", WRONG), 401, "invalid_credentials")


# --- with other settings (a second app each; keep these last) -------------------------------


def test_a_guesser_spread_over_many_addresses_meets_the_account_backstop(other_app, settings, mail_dir):
    small = dataclasses.replace(settings.auth, login_max_failures=2, login_account_max_failures=4)
    client = other_app(auth=small).test_client()
    register_and_verify(client, mail_dir, "ada@example.test")
    for n in range(4):  # two failures from each of two addresses: none of them is locked yet
        expect_problem(
            log_in(client, "ada@example.test", WRONG, **from_ip(f"198.51.100.{n // 2}")), 401, "invalid_credentials"
        )

    locked = log_in(client, "ada@example.test", **from_ip(ADA))

    expect_problem(locked, 429, "login_locked")
    assert 0 < int(locked.headers["Retry-After"]) <= 3600
    # other accounts are not affected
    register_and_verify(client, mail_dir, "bob@example.test")
    assert log_in(client, "bob@example.test", **from_ip(ADA)).status_code == 200


def test_behind_a_trusted_proxy_each_client_has_its_own_lockout(other_app, mail_dir):
    client = other_app(trusted_proxies=1).test_client()
    register_and_verify(client, mail_dir, "ada@example.test")
    for _ in range(5):
        expect_problem(log_in(client, "ada@example.test", WRONG, **forwarded(STRANGER)), 401, "invalid_credentials")
    expect_problem(log_in(client, "ada@example.test", **forwarded(STRANGER)), 429, "login_locked")

    # the same proxy, another client: not locked
    assert log_in(client, "ada@example.test", **forwarded(ADA)).status_code == 200
    # what the client itself writes left of the proxy's entry is not believed
    spoofed = log_in(client, "ada@example.test", **forwarded(f"{ADA}, {STRANGER}"))
    expect_problem(spoofed, 429, "login_locked")


def test_behind_a_trusted_proxy_rate_limits_count_per_client(other_app):
    client = other_app(trusted_proxies=1, auth_rate_limit="2 per minute").test_client()
    body = {"email": "nobody@example.test", "password": PASSWORD}

    first = [client.post("/v1/auth/login", json=body, **forwarded(STRANGER)).status_code for _ in range(3)]

    assert first == [401, 401, 429]
    assert client.post("/v1/auth/login", json=body, **forwarded(ADA)).status_code == 401
    limited = client.post("/v1/auth/login", json=body, **forwarded(f"{ADA}, {STRANGER}"))
    expect_problem(limited, 429, "rate_limited")


def test_without_trusted_proxies_forwarded_addresses_are_ignored(other_app):
    client = other_app(auth_rate_limit="2 per minute").test_client()
    body = {"email": "nobody@example.test", "password": PASSWORD}

    answers = [client.post("/v1/auth/login", json=body, **forwarded(f"198.51.100.{n}")) for n in range(3)]

    assert [answer.status_code for answer in answers] == [401, 401, 429]  # one client: the socket peer
