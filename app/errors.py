"""The one error format of the whole app: RFC 9457 `application/problem+json`.

Every error response is built here: domain errors raised by the modules, HTTP errors
(404/405/415/429...), validation errors from webargs/marshmallow, JWT errors, and
unexpected exceptions (500, logged with a traceback).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ParamSpec, TypeVar

import pybreaker
from flask import Flask, Response, current_app, g, json, request
from werkzeug.exceptions import HTTPException

from app import metrics
from app.resilience import new_breaker, retry_after

PROBLEM_MIMETYPE = "application/problem+json"
logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


class DomainError(Exception):
    """Base for the exceptions that modules raise through their interface.

    `code` is the machine-readable name clients switch on; `status` is the HTTP status the
    edge answers with. Subclasses set both as class attributes, and declare what else they
    tell as annotated attributes (`available: int`): keyword arguments of the constructor,
    None when not given, and the problem document's extension members (`problem_members`).
    """

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **members: Any):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        unknown = set(members) - set(self.member_names())
        if unknown:
            raise TypeError(f"{type(self).__name__} declares no {', '.join(sorted(unknown))}")
        for name in self.member_names():
            setattr(self, name, members.get(name))

    @classmethod
    def member_names(cls) -> tuple[str, ...]:
        """The attributes this error declares (its own and its bases', below DomainError)."""
        declared = (inspect.get_annotations(klass) for klass in reversed(cls.__mro__[: cls.__mro__.index(DomainError)]))
        return tuple(dict.fromkeys(name for annotations in declared for name in annotations))

    def problem_members(self) -> dict[str, Any]:
        """The declared attributes that are set, by their camelCase names in the problem document."""
        members = ((_camel(name), getattr(self, name)) for name in self.member_names())
        return {name: value for name, value in members if value is not None}

    @classmethod
    def from_problem(cls, detail: str, members: dict[str, Any], headers: dict[str, str] | None = None) -> DomainError:
        """The error again from its problem document's members (another service raised it);
        members it does not declare are left out."""
        names = {_camel(name): name for name in cls.member_names()}
        return cls(detail, headers=headers, **{names[name]: value for name, value in members.items() if name in names})


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


class ApiError(Exception):
    """An error raised by the HTTP layer itself (preconditions, auth...)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.errors, self.headers = errors, headers or {}


class StoreGuard:
    """Decorates a module's interface functions so that a store outage (`failures`, the
    driver's connection errors) surfaces as the module's own 503 error, never a 500.

    Calls go through the store's circuit breaker, one per store and process: once it opens,
    calls fail at once, with `Retry-After`, instead of each waiting for a timeout. `start`
    creates that breaker when the module is registered, so that its state is a metric from
    start-up on, not only after the first call.
    """

    def __init__(
        self,
        failures: tuple[type[Exception], ...],
        unavailable: Callable[[], DomainError],
        *,
        store: str,
        cleanup: Callable[[], None] | None = None,
    ):
        self.failures, self.unavailable, self.store, self.cleanup = failures, unavailable, store, cleanup

    def start(self, app: Flask) -> pybreaker.CircuitBreaker:
        breakers = app.extensions.setdefault("breakers", {})
        if self.store not in breakers:
            limits = app.extensions["settings"].resilience
            breakers[self.store] = new_breaker(
                self.store,
                failures=limits.breaker_failures,
                reset_seconds=limits.breaker_reset_seconds,
                counts=self.failures,
            )
        return breakers[self.store]

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            breaker = self.start(current_app)
            try:
                return breaker.call(function, *args, **kwargs)
            except pybreaker.CircuitBreakerError:
                error = self.unavailable()
                error.headers["Retry-After"] = str(retry_after(breaker))
                raise error from None
            except self.failures as failure:
                if self.cleanup is not None:
                    self.cleanup()
                logger.warning("%s: store unavailable: %s", function.__module__, failure)
                error = self.unavailable()
                error.headers["Retry-After"] = "1"
                raise error from failure

        return wrapper


def problem(
    status: int,
    code: str,
    detail: str | None = None,
    *,
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:storefront:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or HTTPStatus(status).description,
        "instance": request.path,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    body.update(extensions)
    response = current_app.response_class(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    response.headers.update(headers or {})
    if status != 429 and "Retry-After" in response.headers:
        g.retry_after = response.headers["Retry-After"]
    return response


def keep_retry_after(response: Response) -> Response:
    """Put back a problem's own Retry-After (a breaker's, say) that flask-limiter's header
    injection replaced with its rate-limit window's reset (flask-limiter offers no hook to
    leave an existing one alone). Registered before the limiter, so that it runs after it;
    test_an_open_mongodb_breaker_answers_503_without_asking_the_store
    (tests/integration/test_http_client.py) fails if that order changes."""
    if "retry_after" in g:
        response.headers["Retry-After"] = g.retry_after
    return response


HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    500: "internal_error",
}


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    headers = dict(error.get_headers()) if status in (405, 429) else {}
    headers.pop("Content-Type", None)
    headers.update(data.get("headers") or {})
    messages = data.get("messages")
    if messages:
        return _validation_problem(messages, headers)
    if status == 429:
        metrics.rate_limited()
        return problem(429, "rate_limited", f"Too many requests: limit is {error.description}.", headers=headers)
    code = HTTP_ERROR_CODES.get(status, "http_error")
    return problem(status, code, data.get("message") or error.description, headers=headers)


def _validation_problem(messages: dict[str, Any], headers: dict[str, str]) -> Response:
    """Flatten webargs' {location: {field: [msg]}} into {field: [msg]}."""
    if messages.get("json") == ["Invalid JSON body."]:
        return problem(400, "malformed_json", "The request body is not valid JSON.", headers=headers)
    errors: dict[str, list[str]] = {}
    for location_errors in messages.values():
        _flatten(location_errors, "", errors)
    return problem(400, "validation_error", "The request has invalid fields.", errors=errors, headers=headers)


def _flatten(node: Any, prefix: str, into: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), into)
    elif isinstance(node, list) and all(isinstance(item, str) for item in node):
        into.setdefault(prefix or "_schema", []).extend(node)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _flatten(item, f"{prefix}.{index}", into)
    else:
        into.setdefault(prefix or "_schema", []).append(str(node))


def handle_domain_error(error: DomainError) -> Response:
    return problem(error.status, error.code, error.detail, headers=error.headers, **error.problem_members())


def handle_api_error(error: ApiError) -> Response:
    return problem(error.status, error.code, error.detail, errors=error.errors, headers=error.headers)


def handle_unexpected_error(error: Exception) -> Response:
    logger.exception("Unhandled exception on %s %s", request.method, request.path)
    return problem(500, "internal_error", "An unexpected error occurred; it has been logged.")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(Exception, handle_unexpected_error)
