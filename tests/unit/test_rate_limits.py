"""The one-trip fixed window without Redis: limits' own fixed window, unchanged."""

from __future__ import annotations

from flask import Flask
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import STRATEGIES, FixedWindowRateLimiter

from app.extensions import limiter
from app.rate_limits import ONE_TRIP_FIXED_WINDOW, OneTripFixedWindowRateLimiter


def test_the_strategy_is_registered_and_the_limiter_uses_it():
    assert STRATEGIES[ONE_TRIP_FIXED_WINDOW] is OneTripFixedWindowRateLimiter
    assert limiter._strategy == ONE_TRIP_FIXED_WINDOW


def test_with_memory_storage_it_counts_as_limits_fixed_window_does():
    ours, theirs = OneTripFixedWindowRateLimiter(MemoryStorage()), FixedWindowRateLimiter(MemoryStorage())
    limit = RateLimitItemPerMinute(2)
    with Flask(__name__).test_request_context():
        for _ in range(3):
            assert ours.hit(limit, "10.0.0.1", "route") == theirs.hit(limit, "10.0.0.1", "route")
            ours_window, theirs_window = (s.get_window_stats(limit, "10.0.0.1", "route") for s in (ours, theirs))
            assert ours_window.remaining == theirs_window.remaining
            assert abs(ours_window.reset_time - theirs_window.reset_time) < 1
        assert ours.test(limit, "10.0.0.1", "route") is theirs.test(limit, "10.0.0.1", "route") is False
        ours.clear(limit, "10.0.0.1", "route")
        assert ours.get_window_stats(limit, "10.0.0.1", "route").remaining == 2


def test_outside_a_request_it_still_counts():
    strategy = OneTripFixedWindowRateLimiter(MemoryStorage())
    limit = RateLimitItemPerMinute(1)
    assert strategy.hit(limit, "cli") is True
    assert strategy.hit(limit, "cli") is False
    assert strategy.get_window_stats(limit, "cli").remaining == 0
