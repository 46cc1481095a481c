"""Temporary lock after repeated failed logins, per (account, client IP), with a per-account backstop.

A stranger's guesses lock the account only at the stranger's address: LOGIN_MAX_FAILURES
failures for one (account, IP) in LOGIN_LOCK_SECONDS. A guesser spread over many addresses
meets the backstop, LOGIN_ACCOUNT_MAX_FAILURES failures for the account from anywhere in
LOGIN_ACCOUNT_LOCK_SECONDS, which locks it for everyone (its owner included) until that
window passes or a password reset lifts it: the price of stopping distributed guessing.

Counted with the rate limiter's own storage (Redis when configured), so the count is shared
by every worker and the lock lifts by itself when the window passes.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond

from app.accounts.errors import LoginLocked
from app.extensions import limiter

NAMESPACE = "login-failures"


class LoginLockout:
    def __init__(self, max_failures: int, lock_seconds: int, account_max_failures: int, account_lock_seconds: int):
        self.per_address = RateLimitItemPerSecond(max_failures, lock_seconds)
        self.per_account = RateLimitItemPerSecond(account_max_failures, account_lock_seconds)

    def _counters(self, email: str, client_ip: str) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        return [(self.per_address, ("account-ip", email, client_ip)), (self.per_account, ("account", email))]

    def check(self, email: str, client_ip: str) -> None:
        for item, key in self._counters(email, client_ip):
            if not limiter.limiter.test(item, NAMESPACE, *key):
                raise _locked(item, key)

    def record_failure(self, email: str, client_ip: str) -> None:
        for item, key in self._counters(email, client_ip):
            limiter.limiter.hit(item, NAMESPACE, *key)

    def clear(self, email: str, client_ip: str | None = None) -> None:
        """After a success at `client_ip`: its count starts again. Without an address (a
        password reset, which proves the owner): the account's backstop is lifted; the counts
        of the addresses that failed stay until their windows pass."""
        if client_ip is not None:
            limiter.limiter.clear(self.per_address, NAMESPACE, "account-ip", email, client_ip)
        else:
            limiter.limiter.clear(self.per_account, NAMESPACE, "account", email)


def _locked(item: RateLimitItem, key: tuple[str, ...]) -> LoginLocked:
    reset_at, _ = limiter.limiter.get_window_stats(item, NAMESPACE, *key)
    retry_after = max(math.ceil(reset_at - time.time()), 1)
    return LoginLocked("Too many failed logins; try again later.", headers={"Retry-After": str(retry_after)})
