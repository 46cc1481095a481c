"""A fixed-window rate limit whose hit and `RateLimit-*` headers cost one Redis round trip.

Flask-Limiter counts a hit with the strategy's `hit`, then asks the strategy for the window's
stats to write the headers, which limits' fixed-window strategy reads back from Redis with a
GET and a TTL: three commands per request. This strategy counts the hit with one script that
also answers the key's TTL (limits' own incr-and-expire script, plus the TTL), and answers the
same request's question about that window from the script's result. The keys, the window and
the numbers are the fixed window's; other storages (memory, the in-memory fallback) and calls
outside a request go through limits' own strategy unchanged.
"""

from __future__ import annotations

import time

from flask import has_request_context, request
from limits import RateLimitItem, WindowStats
from limits.storage import RedisStorage, Storage
from limits.strategies import STRATEGIES, FixedWindowRateLimiter

ONE_TRIP_FIXED_WINDOW = "fixed-window-one-trip"
_WINDOWS = "storefront.rate_limit_windows"  # the request's WSGI environ: {key: WindowStats}

INCR_EXPIRE_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""


class OneTripFixedWindowRateLimiter(FixedWindowRateLimiter):
    def __init__(self, storage: Storage):
        super().__init__(storage)
        self._redis = storage if isinstance(storage, RedisStorage) else None
        self._incr_expire_ttl = self._redis.get_connection().register_script(INCR_EXPIRE_TTL) if self._redis else None

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        if self._redis is None:
            return super().hit(item, *identifiers, cost=cost)
        key = item.key_for(*identifiers)
        count, ttl = self._incr_expire_ttl([self._redis.prefixed_key(key)], [item.get_expiry(), cost])
        if has_request_context():
            windows = request.environ.setdefault(_WINDOWS, {})
            windows[key] = WindowStats(max(int(ttl), 0) + time.time(), max(0, item.amount - int(count)))
        return int(count) <= item.amount

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        if self._redis is not None and has_request_context():
            window = request.environ.get(_WINDOWS, {}).get(item.key_for(*identifiers))
            if window is not None:
                return window
        return super().get_window_stats(item, *identifiers)

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        if has_request_context():
            request.environ.get(_WINDOWS, {}).pop(item.key_for(*identifiers), None)
        super().clear(item, *identifiers)


STRATEGIES[ONE_TRIP_FIXED_WINDOW] = OneTripFixedWindowRateLimiter  # the registry Flask-Limiter picks strategies from
