"""The login lockout under concurrent attempts, counted in real Redis: every attempt is counted
by one atomic increment before its password is checked, so N wrong passwords sent at once for
one (account, IP) let at most LOGIN_MAX_FAILURES of them reach the password check."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from app.accounts import passwords
from tests.integration.test_auth_api import PASSWORD, from_ip, log_in, register_and_verify

ATTEMPTS = 16
MAX_FAILURES = 5  # the default LOGIN_MAX_FAILURES


@pytest.fixture
def run_keys(redis_url):
    """A fresh account and client address for this run, and their Redis keys removed afterwards."""
    run = uuid.uuid4()
    address, ip = f"race-{run.hex[:12]}@example.test", f"10.77.{run.bytes[0]}.{run.bytes[1]}"
    yield address, ip
    client = redis.Redis.from_url(redis_url)
    for pattern in (f"*{address}*", f"*{ip}*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    client.close()


@pytest.fixture
def password_checks(monkeypatch) -> Counter:
    checks: Counter = Counter()
    lock = threading.Lock()
    verify = passwords.verify_password

    def counted(password_hash, password):
        with lock:
            checks[password] += 1
        return verify(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", counted)
    return checks


def test_concurrent_wrong_passwords_never_get_past_the_limit(other_app, redis_url, mail_dir, run_keys, password_checks):
    app = other_app(redis_url=redis_url)
    address, ip = run_keys
    register_and_verify(app.test_client(), mail_dir, address)
    start = threading.Barrier(ATTEMPTS)

    def guess(n: int):
        client = app.test_client()
        start.wait()
        return log_in(client, address, f"Wrong-Password-{n:02d}", **from_ip(ip))

    with ThreadPoolExecutor(ATTEMPTS) as pool:
        answers = list(pool.map(guess, range(ATTEMPTS)))

    codes = Counter((answer.status_code, answer.get_json()["code"]) for answer in answers)
    assert codes == {(401, "invalid_credentials"): MAX_FAILURES, (429, "login_locked"): ATTEMPTS - MAX_FAILURES}
    assert sum(count for password, count in password_checks.items() if password != PASSWORD) == MAX_FAILURES
    assert all(0 < int(answer.headers["Retry-After"]) <= 900 for answer in answers if answer.status_code == 429)
    client = app.test_client()
    locked = log_in(client, address, **from_ip(ip))
    assert (locked.status_code, locked.get_json()["code"]) == (429, "login_locked")  # even the right password
    assert password_checks[PASSWORD] == 0
    assert log_in(client, address, **from_ip("10.78.0.1")).status_code == 200  # the owner, elsewhere
