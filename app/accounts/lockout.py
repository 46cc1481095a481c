"""Temporary lock after repeated failed logins, per account and per client IP.

Counted with the rate limiter's own storage (Redis when configured), so the count is shared
by every worker and the lock lifts by itself when the window passes.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond

from app.accounts.errors import LoginLocked
from app.extensions import limiter


class LoginLockout:
    def __init__(self, max_failures: int, lock_seconds: int):
        self.item = RateLimitItemPerSecond(max_failures, lock_seconds)

    def _keys(self, email: str, client_ip: str) -> list[tuple[str, str]]:
        return [("account", email), ("ip", client_ip)]

    def check(self, email: str, client_ip: str) -> None:
        for kind, value in self._keys(email, client_ip):
            if not limiter.limiter.test(self.item, "login-failures", kind, value):
                reset_at, _ = limiter.limiter.get_window_stats(self.item, "login-failures", kind, value)
                retry_after = max(math.ceil(reset_at - time.time()), 1)
                raise LoginLocked("Too many failed logins; try again later.", headers={"Retry-After": str(retry_after)})

    def record_failure(self, email: str, client_ip: str) -> None:
        for kind, value in self._keys(email, client_ip):
            limiter.limiter.hit(self.item, "login-failures", kind, value)

    def clear(self, email: str) -> None:
        limiter.limiter.clear(self.item, "login-failures", "account", email)
