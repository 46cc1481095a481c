"""Any module's port over HTTP: what a process uses for a module it does not serve itself.

One client per remote module and process, with every guard an outbound call needs:
- a pooled keep-alive session, with connect and read timeouts (no call can hang a worker);
- a bulkhead: at most SERVICE_POOL_SIZE calls in flight, so one slow service cannot hold
  every thread; a call that finds it full fails at once with 503;
- retries with exponential backoff and jitter (tenacity), for idempotent functions only and
  within a retry budget, so retries cannot multiply the load on a failing service;
- a circuit breaker (pybreaker): after BREAKER_FAILURES failures in a row, calls fail at
  once with 503 `dependency_unavailable` and `Retry-After` until one probe succeeds.
Only transport errors and 5xx answers count as failures; any other answer naming a domain
error (a 4xx, or a 503 about the service's own dependencies) is raised again in the caller as
the very same exception class.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pybreaker
import requests
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from app import metrics
from app.config import Settings
from app.errors import DomainError
from app.events.envelope import ACTOR_HEADER, current_actor
from app.logs import REQUEST_ID_HEADER, current_request_id
from app.ports import CALLER_HEADER, SERVICE_KEY_HEADER, Exposed, Port, exception_class
from app.resilience import RetryBudget, new_breaker, retry_after

logger = logging.getLogger(__name__)


class ServiceFailure(Exception):
    """The service did not answer, or answered 5xx: counts against its breaker."""

    def __init__(self, reason: str, response: requests.Response | None = None):
        super().__init__(reason)
        self.response = response


class ServiceClient:
    def __init__(self, port: Port, base_url: str, settings: Settings):
        limits = settings.resilience
        self.port = port
        self.base_url = base_url.rstrip("/")
        self.timeout = (limits.service_connect_timeout, limits.service_read_timeout)
        self.attempts_when_idempotent = 1 + limits.service_retries
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=limits.service_pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Mutual TLS: our certificate, and theirs checked against the service CA. `verify` goes
        # with each request: requests lets REQUESTS_CA_BUNDLE override a session's own.
        self.verify: str | bool = True
        if settings.service_tls is not None:
            self.session.cert = (settings.service_tls.cert, settings.service_tls.key)
            self.verify = settings.service_tls.ca
        self.session.headers.update(
            {SERVICE_KEY_HEADER: settings.service_api_key, CALLER_HEADER: settings.caller_name()}
        )
        self.bulkhead = threading.BoundedSemaphore(limits.service_pool_size)
        self.breaker = new_breaker(
            f"{port.module}-service",
            failures=limits.breaker_failures,
            reset_seconds=limits.breaker_reset_seconds,
            counts=(ServiceFailure,),
        )
        self.budget = RetryBudget()

    def call(self, function: Exposed, arguments: dict[str, Any]) -> Any:
        if not self.bulkhead.acquire(blocking=False):
            raise self._unavailable("has too many calls in flight", seconds=1)
        try:
            self.budget.record_call()
            response = self._send_with_retries(function, function.encode_arguments(arguments))
        except pybreaker.CircuitBreakerError:
            raise self._unavailable("is failing; calls are paused", seconds=retry_after(self.breaker)) from None
        except ServiceFailure as failure:
            raise self._as_domain_error(failure.response) or self._unavailable(f"is unreachable ({failure})") from None
        finally:
            self.bulkhead.release()
        if response.status_code == 200:
            return function.decode_result(response.json()["result"])
        raise self._as_domain_error(response) or self._unavailable(f"refused the call ({response.status_code})")

    def _send_with_retries(self, function: Exposed, payload: dict[str, Any]) -> requests.Response:
        attempts = self.attempts_when_idempotent if function.idempotent else 1
        # tenacity asks `retry` before `stop`: the budget is spent in `stop`, and only once the
        # attempts are not used up, so a retry that will not happen costs nothing.
        retrying = Retrying(
            stop=stop_after_attempt(attempts) | self._out_of_budget,
            wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),  # 50 ms, 100 ms, ... + jitter
            retry=retry_if_exception_type(ServiceFailure),
            before_sleep=lambda _state: metrics.RETRIES.labels(self.breaker.name, "retried").inc(),
            reraise=True,
        )
        return retrying(
            self.breaker.call, self._send, f"{self.base_url}/internal/{self.port.module}/{function.name}", payload
        )

    def _out_of_budget(self, _state) -> bool:
        if self.budget.try_spend():
            return False
        metrics.RETRIES.labels(self.breaker.name, "budget_exhausted").inc()
        return True

    def _send(self, url: str, payload: dict[str, Any]) -> requests.Response:
        try:
            headers = {ACTOR_HEADER: current_actor()}
            if request_id := current_request_id():
                headers[REQUEST_ID_HEADER] = request_id
            response = self.session.post(url, json=payload, headers=headers, timeout=self.timeout, verify=self.verify)
        except requests.RequestException as error:
            raise ServiceFailure(type(error).__name__) from error
        if response.status_code >= 500 and not self._reports_another_outage(response):
            raise ServiceFailure(f"answered {response.status_code}", response)
        return response

    def _reports_another_outage(self, response: requests.Response) -> bool:
        """A 503 naming another module's Unavailable error: this service answers, a dependency
        of its own is down (the cart service reporting the products service, say). It must not
        open this service's breaker, or every cart read would fail with the products service."""
        error = self._as_domain_error(response)
        return error is not None and not isinstance(error, self.port.unavailable)

    def _as_domain_error(self, response: requests.Response | None) -> DomainError | None:
        """The exception the service raised, rebuilt from its problem document."""
        if response is None:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        error_class = exception_class(body.get("exception", "")) if isinstance(body, dict) else None
        if error_class is None:
            logger.error(
                "%s service answered %s without a known exception: %.200s",
                self.port.module,
                response.status_code,
                response.text,
            )
            return None
        headers = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else None
        return error_class.from_problem(body.get("detail", ""), body, headers)

    def _unavailable(self, reason: str, *, seconds: int = 1) -> DomainError:
        return self.port.unavailable(
            f"The {self.port.module} service {reason}; try again shortly.", headers={"Retry-After": str(seconds)}
        )
