"""The retry budget and the circuit breaker of app/resilience.py, without I/O."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pybreaker
import pytest

from app import resilience
from app.resilience import RetryBudget, new_breaker, retry_after


class Clock:
    """A stand-in for time.monotonic that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(resilience, "time", SimpleNamespace(monotonic=clock))  # this module's clock only
    return clock


def spend(budget: RetryBudget, times: int) -> list[bool]:
    return [budget.try_spend() for _ in range(times)]


# --- RetryBudget ---------------------------------------------------------------------------


def test_a_quiet_process_may_retry_up_to_the_floor(clock):
    budget = RetryBudget(ratio=0.2, floor=3, window=10)

    assert spend(budget, 4) == [True, True, True, False]


def test_the_budget_grows_with_the_calls_by_the_ratio(clock):
    budget = RetryBudget(ratio=0.5, floor=0, window=10)
    assert budget.try_spend() is False  # no calls, no floor: no retry

    for _ in range(4):
        budget.record_call()

    assert spend(budget, 3) == [True, True, False]  # 0.5 x 4 calls


def test_floor_and_ratio_add_up(clock):
    budget = RetryBudget(ratio=0.2, floor=1, window=10)
    for _ in range(10):
        budget.record_call()

    assert spend(budget, 4) == [True, True, True, False]  # 1 + 0.2 x 10


def test_spent_retries_come_back_once_the_window_has_passed(clock):
    budget = RetryBudget(ratio=0, floor=2, window=10)
    assert spend(budget, 3) == [True, True, False]

    clock.now += 9.9
    assert budget.try_spend() is False
    clock.now += 0.2
    assert spend(budget, 3) == [True, True, False]


def test_calls_older_than_the_window_no_longer_earn_retries(clock):
    budget = RetryBudget(ratio=1, floor=0, window=10)
    for _ in range(3):
        budget.record_call()
    clock.now += 6
    budget.record_call()

    clock.now += 5  # the first three calls are now out of the window
    assert spend(budget, 2) == [True, False]


def test_the_window_is_real_time():
    budget = RetryBudget(ratio=0, floor=1, window=0.1)
    assert spend(budget, 2) == [True, False]

    time.sleep(0.15)
    assert budget.try_spend() is True


def test_concurrent_spenders_never_overdraw_the_budget():
    budget = RetryBudget(ratio=0, floor=50, window=60)
    granted = []
    start = threading.Barrier(8)

    def spender() -> None:
        start.wait()
        granted.extend(spend(budget, 20))

    threads = [threading.Thread(target=spender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert granted.count(True) == 50


# --- the circuit breaker -------------------------------------------------------------------


class Outage(Exception):
    """A failure of the kind the breaker counts."""


class Answer(Exception):
    """Any other exception: the dependency answered."""


def failing() -> None:
    raise Outage


def answering() -> None:
    raise Answer


def breaker(failures: int = 3, reset_seconds: int = 10) -> pybreaker.CircuitBreaker:
    return new_breaker("test", failures=failures, reset_seconds=reset_seconds, counts=(Outage,))


def test_the_breaker_opens_after_the_given_failures_in_a_row():
    guard = breaker(failures=3)
    for _ in range(3):
        with pytest.raises(Outage):
            guard.call(failing)

    called = []
    with pytest.raises(pybreaker.CircuitBreakerError):
        guard.call(called.append, "x")
    assert called == []


def test_other_exceptions_pass_through_and_do_not_count():
    guard = breaker(failures=2)
    for _ in range(5):
        with pytest.raises(Answer):
            guard.call(answering)

    assert guard.call(lambda: "ok") == "ok"


def test_an_answer_between_failures_starts_the_count_again():
    guard = breaker(failures=2)
    with pytest.raises(Outage):
        guard.call(failing)
    with pytest.raises(Answer):
        guard.call(answering)
    with pytest.raises(Outage):
        guard.call(failing)

    assert guard.call(lambda: "ok") == "ok"


def opened_seconds_ago(guard: pybreaker.CircuitBreaker, seconds: float) -> None:
    guard.open()
    guard.storage.opened_at = datetime.now(UTC) - timedelta(seconds=seconds)


def test_after_the_reset_time_a_successful_probe_closes_the_breaker():
    guard = breaker(failures=1, reset_seconds=10)
    opened_seconds_ago(guard, 11)

    assert guard.call(lambda: "probe") == "probe"
    assert guard.call(lambda: "again") == "again"


def test_a_failed_probe_opens_the_breaker_again():
    guard = breaker(failures=1, reset_seconds=10)
    opened_seconds_ago(guard, 11)

    with pytest.raises(Outage):
        guard.call(failing)
    with pytest.raises(pybreaker.CircuitBreakerError):
        guard.call(lambda: "refused")


def test_while_half_open_one_probe_runs_and_other_calls_are_refused():
    guard = breaker(failures=1, reset_seconds=10)
    opened_seconds_ago(guard, 11)
    probing, finish = threading.Event(), threading.Event()

    def probe() -> str:
        probing.set()
        finish.wait(5)
        return "probe"

    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(guard.call(probe)))
    thread.start()
    assert probing.wait(5)
    try:
        with pytest.raises(pybreaker.CircuitBreakerError):
            guard.call(lambda: "second")
    finally:
        finish.set()
        thread.join(5)

    assert outcome == ["probe"]
    assert guard.call(lambda: "closed") == "closed"


def test_calls_through_one_breaker_run_concurrently():
    guard = breaker()
    inside = threading.Barrier(3, timeout=5)  # two calls plus the test

    threads = [threading.Thread(target=guard.call, args=(inside.wait,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        inside.wait()  # BrokenBarrierError after 5 s if the calls ran one at a time
    finally:
        for thread in threads:
            thread.join(5)


def test_retry_after_counts_the_whole_seconds_left_and_at_least_one():
    guard = breaker(reset_seconds=10)
    assert retry_after(guard) == 1  # never opened

    opened_seconds_ago(guard, 2.5)
    assert retry_after(guard) == 8
    opened_seconds_ago(guard, 30)
    assert retry_after(guard) == 1


def test_the_pybreaker_internals_the_concurrent_breaker_counts_with_are_there():
    """ConcurrentBreaker counts outcomes through the state's `_handle_error` (which re-raises
    and, on the last failure allowed, opens the breaker) and `_handle_success`: pybreaker has
    no public hook for a call made outside its lock. This fails on an upgrade that renames or
    changes them."""
    plain = pybreaker.CircuitBreaker(fail_max=1, throw_new_error_on_trip=False)
    with pytest.raises(Outage):
        plain.state._handle_error(Outage())
    assert plain.current_state == pybreaker.STATE_OPEN

    plain.half_open()
    plain.state._handle_success()
    assert plain.current_state == pybreaker.STATE_CLOSED
