"""The guards every outbound call goes through: circuit breakers and a retry budget.

Timeouts are set where each client is built (settings in ResilienceSettings); bulkheads are
the bounded pools of each client (pymongo's maxPoolSize, SQLAlchemy's pool, the service
clients' semaphores).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import timedelta

import pybreaker

from app import clock, metrics


def new_breaker(
    name: str, *, failures: int, reset_seconds: int, counts: tuple[type[BaseException], ...]
) -> ConcurrentBreaker:
    """A breaker that opens after `failures` consecutive failures of the kinds in `counts`
    (any other exception is an answer, not a failure) and lets one probe through after
    `reset_seconds`. Its state is exported as a metric from its creation on (closed)."""
    metrics.breaker_changed(name, pybreaker.STATE_CLOSED, transition=False)
    return ConcurrentBreaker(
        storage=pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED),
        fail_max=failures,
        reset_timeout=reset_seconds,
        exclude=[lambda error: not isinstance(error, counts)],
        name=name,
        throw_new_error_on_trip=False,
        listeners=[StateMetrics()],
    )


class StateMetrics(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state, new_state) -> None:
        metrics.breaker_changed(cb.name, new_state.name)


class ConcurrentBreaker(pybreaker.CircuitBreaker):
    """pybreaker's breaker holds its lock for the whole guarded call, so calls through one
    breaker would run one at a time: one slow call would queue every other thread of the
    process behind it (no bulkhead, no timeout). Here the lock guards the state only; the call
    runs outside it, and while half-open a single probe goes through, the others fail fast.

    No public hook runs the call outside pybreaker's lock, so this counts outcomes through the
    state's `_handle_error` and `_handle_success`, as pybreaker's own `call` does;
    tests/unit/test_resilience.py pins both, and fails on an upgrade that changes them."""

    def __init__(self, *, storage: pybreaker.CircuitMemoryStorage, **kwargs) -> None:
        super().__init__(state_storage=storage, **kwargs)
        self.storage = storage  # when it opened (pybreaker keeps the storage private)
        self._state_lock = threading.Lock()
        self._probing = False

    def open(self) -> bool:
        """Open, noting the moment by app.clock, which every pause is measured with."""
        throw_new_error = super().open()
        self.storage.opened_at = clock.now()
        return throw_new_error

    def call(self, func, *args, **kwargs):
        with self._state_lock:
            probe = self._admit()
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            with self._state_lock:
                if probe:
                    self._probing = False
                self.state._handle_error(error)  # re-raises; counts a failure, opening on the last
        with self._state_lock:
            if probe:
                self._probing = False
            self.state._handle_success()
        return result

    def _admit(self) -> bool:
        """Whether this call is the half-open probe; raises CircuitBreakerError when refused."""
        state = self.state.name
        if state == pybreaker.STATE_CLOSED:
            return False
        if state == pybreaker.STATE_OPEN:
            opened_at = self.storage.opened_at
            if opened_at and clock.now() < opened_at + timedelta(seconds=self.reset_timeout):
                raise pybreaker.CircuitBreakerError("Timeout not elapsed yet, circuit breaker still open")
            self.half_open()
        if self._probing:
            raise pybreaker.CircuitBreakerError("A probe is in flight, circuit breaker still half-open")
        self._probing = True
        return True


def retry_after(breaker: ConcurrentBreaker) -> int:
    """Whole seconds until an open breaker lets a probe through (at least 1)."""
    opened_at = breaker.storage.opened_at
    if opened_at is None:
        return 1
    remaining = breaker.reset_timeout - (clock.now() - opened_at).total_seconds()
    return max(1, math.ceil(remaining))


def is_refusing_calls(breaker: ConcurrentBreaker) -> bool:
    """Whether the breaker is open and still within its pause. Once the pause has elapsed it
    lets the next call through as a probe, so it no longer counts as open: a process that
    receives no calls (an unready one) would otherwise never see it close."""
    if breaker.current_state != pybreaker.STATE_OPEN:
        return False
    opened_at = breaker.storage.opened_at
    return opened_at is None or clock.now() < opened_at + timedelta(seconds=breaker.reset_timeout)


class RetryBudget:
    """Retries allowed: at most `ratio` of the calls of the last `window` seconds, plus
    `floor` so that a quiet process can still retry. A failing dependency then sees little
    more traffic than it would without retries, instead of (1 + retries) times as much."""

    def __init__(self, ratio: float = 0.2, floor: int = 10, window: float = 10.0):
        self.ratio, self.floor, self.window = ratio, floor, window
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._lock = threading.Lock()

    def record_call(self) -> None:
        with self._lock:
            self._calls.append(time.monotonic())

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is used up."""
        with self._lock:
            now = time.monotonic()
            for stamps in (self._calls, self._retries):
                while stamps and stamps[0] < now - self.window:
                    stamps.popleft()
            if len(self._retries) >= self.floor + self.ratio * len(self._calls):
                return False
            self._retries.append(now)
            return True
