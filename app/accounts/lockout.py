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

    def count_attempt(self, email: str, client_ip: str) -> None:
        """Count this attempt as a failure before its password is checked, or raise LoginLocked.

        One atomic increment per counter (limits' `hit`: INCR in Redis) both counts the attempt
        and says whether it is within the limit, so concurrent attempts cannot all pass a check
        made before any of them is counted: at most LOGIN_MAX_FAILURES attempts per (account,
        IP) in a window ever reach the password check. An attempt that turns out right is given
        back (`succeeded`, `forgive`)."""
        for item, key in self._counters(email, client_ip):
            if not limiter.limiter.hit(item, NAMESPACE, *key):
                raise _locked(item, key)

    def succeeded(self, email: str, client_ip: str) -> None:
        """The password was right: the address's count starts again, and the attempt is taken
        off the account's backstop (the owner's logins never use it up, nor reset it)."""
        limiter.limiter.clear(self.per_address, NAMESPACE, "account-ip", email, client_ip)
        limiter.limiter.hit(self.per_account, NAMESPACE, "account", email, cost=-1)

    def forgive(self, email: str, client_ip: str) -> None:
        """The attempt was no guess (its password was right but the login was refused for
        another reason, or it failed before the check): give its count back."""
        for item, key in self._counters(email, client_ip):
            limiter.limiter.hit(item, NAMESPACE, *key, cost=-1)

    def clear(self, email: str) -> None:
        """A password reset proved the owner: the account's backstop is lifted; the counts of
        the addresses that failed stay until their windows pass."""
        limiter.limiter.clear(self.per_account, NAMESPACE, "account", email)


def _locked(item: RateLimitItem, key: tuple[str, ...]) -> LoginLocked:
    reset_at, _ = limiter.limiter.get_window_stats(item, NAMESPACE, *key)
    retry_after = max(math.ceil(reset_at - time.time()), 1)
    return LoginLocked("Too many failed logins; try again later.", headers={"Retry-After": str(retry_after)})
