"""Module ports: a module's interface functions, called in this process or over HTTP.

Each `interface.py` declares its functions with `Port.expose`. The composition root decides,
per module, whether a call runs here (the module is in APP_MODULES) or goes to the module's
own service (its *_SERVICE_URL, see app/http_client.py). Both paths take and return the same
DTOs and raise the same exceptions: arguments and results cross the wire through one cattrs
converter, typed by the function's own annotations, and a DomainError raised by the service is
raised again, as the same class with the same attributes, in the caller.

The service side is one route per module, `POST /internal/<module>/<function>`, served only
by service processes (never on the public API's listener, see app/__init__.py) and closed to
anyone without a caller's key (`X-Service-Key`, SERVICE_CALLER_KEYS) naming that caller
(`X-Service-Caller`); each caller may call only the functions in its scope (SERVICE_SCOPES
in app/config.py).
"""

from __future__ import annotations

import collections.abc
import functools
import hmac
import inspect
import logging
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import cattrs
from cattrs.preconf.json import make_converter
from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.routing import Map, Rule

from app.config import SERVICE_SCOPES
from app.errors import ApiError, DomainError, problem
from app.events.envelope import ACTOR_HEADER, SYSTEM

logger = logging.getLogger(__name__)

converter = make_converter()
converter.register_unstructure_hook(Decimal, str)


def _decimal(value: Any, _type: type) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None


def _datetime(value: Any, _type: type) -> datetime:
    """An ISO 8601 instant; one without a UTC offset is refused rather than guessed."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range") from None


def _exactly(kind: type) -> Callable[[Any, type], Any]:
    """cattrs converts primitives with the type itself (`int(1.5)` is 1, `bool("false")` is
    True); across the wire a value of another JSON type is refused instead."""

    def structure(value: Any, _type: type) -> Any:
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise ValueError(f"expected {kind.__name__}, got {value!r}")
        return value

    return structure


for _primitive in (int, float, str, bool):
    converter.register_structure_hook(_primitive, _exactly(_primitive))
converter.register_structure_hook(Decimal, _decimal)
converter.register_structure_hook(datetime, _datetime)
converter.register_structure_hook(typing.Any, lambda value, _type: value)
converter.register_structure_hook_func(
    lambda type_: typing.get_origin(type_) is collections.abc.Iterable,
    lambda value, type_: [converter.structure(item, typing.get_args(type_)[0]) for item in value],
)
# An Iterable argument may be any iterable (a generator, say) of DTOs: sent as a JSON array.
converter.register_unstructure_hook_factory(
    lambda type_: typing.get_origin(type_) is collections.abc.Iterable,
    lambda type_: lambda value: [converter.unstructure(item, typing.get_args(type_)[0]) for item in value],
)

SERVICE_KEY_HEADER = "X-Service-Key"
CALLER_HEADER = "X-Service-Caller"


class RemoteCaller(Protocol):
    def call(self, function: Exposed, arguments: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Exposed:
    """One interface function as both sides of the wire see it."""

    module: str
    name: str
    local: Callable[..., Any]
    idempotent: bool  # safe to retry: same arguments, same effect

    @functools.cached_property
    def hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.local)

    def encode_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return {name: converter.unstructure(value, self.hints.get(name, Any)) for name, value in arguments.items()}

    def decode_arguments(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise ApiError(400, "validation_error", "The body must be a JSON object of keyword arguments.")
        parameters = inspect.signature(self.local).parameters
        errors = {name: ["Unknown argument."] for name in payload if name not in parameters}
        arguments = {}
        for name, value in payload.items():
            if name in errors:
                continue
            try:
                arguments[name] = converter.structure(value, self.hints.get(name, Any))
            except (cattrs.BaseValidationError, ValueError, TypeError) as error:
                errors[name] = [f"Invalid value: {error}"]
        missing = [
            name
            for name, parameter in parameters.items()
            if parameter.default is parameter.empty and name not in payload
        ]
        errors.update({name: ["Missing argument."] for name in missing})
        if errors:
            raise ApiError(400, "validation_error", "The call has invalid arguments.", errors=errors)
        return arguments

    def encode_result(self, result: Any) -> Any:
        return converter.unstructure(result, self.hints.get("return", Any))

    def decode_result(self, payload: Any) -> Any:
        return_type = self.hints.get("return", Any)
        return None if return_type is type(None) else converter.structure(payload, return_type)


class Port:
    """The functions one module offers the others; see the module docstring."""

    def __init__(self, module: str, *, unavailable: type[DomainError]):
        self.module = module
        self.unavailable = unavailable  # raised when the module's service cannot be reached
        self.functions: dict[str, Exposed] = {}

    def expose(self, function: Callable | None = None, *, idempotent: bool = False) -> Callable:
        def decorate(local: Callable) -> Callable:
            exposed = Exposed(self.module, local.__name__, local, idempotent)
            self.functions[exposed.name] = exposed

            @functools.wraps(local)
            def call(**arguments: Any) -> Any:
                remote = self.remote()
                return local(**arguments) if remote is None else remote.call(exposed, arguments)

            return call

        return decorate(function) if function is not None else decorate

    def remote(self) -> RemoteCaller | None:
        """The HTTP client of this module's service, when this process does not serve it."""
        return current_app.extensions.get("remote_ports", {}).get(self.module)

    def blueprint(self) -> Blueprint:
        """The module's service API: `POST /internal/<module>/<function>` with the keyword
        arguments as a JSON object; answers `{"result": ...}` or a problem document."""
        blueprint = Blueprint(f"internal-{self.module}", __name__, url_prefix=f"/internal/{self.module}")
        blueprint.before_request(require_service_credentials)

        @blueprint.post("/<name>")
        def call(name: str):
            exposed = self.functions.get(name)
            if exposed is None:
                raise ApiError(404, "not_found", f"The {self.module} service has no function {name!r}.")
            if not in_scope(g.service_caller, self.module, name):
                raise ApiError(
                    403, "service_scope_denied", f"The {g.service_caller} service may not call {self.module}.{name}."
                )
            arguments = exposed.decode_arguments(request.get_json())
            logger.debug("%s.%s called by %s", self.module, name, g.service_caller)
            try:
                result = exposed.local(**arguments)
            except DomainError as error:
                return problem(
                    error.status,
                    error.code,
                    error.detail,
                    headers=error.headers,
                    exception=exception_name(type(error)),
                    **error.problem_members(),
                )
            return jsonify(result=exposed.encode_result(result))

        return blueprint

    def document(self, spec: Any) -> None:
        """Describe the service API in the OpenAPI document, one operation per function."""
        for exposed in self.functions.values():
            parameters = inspect.signature(exposed.local).parameters
            body = {
                "type": "object",
                "properties": {name: {"description": _type_name(exposed.hints.get(name, Any))} for name in parameters},
                "required": [name for name, parameter in parameters.items() if parameter.default is parameter.empty],
                "additionalProperties": False,
            }
            problem_response = {"description": "problem+json naming the `exception` raised"}
            rule = Rule(f"/internal/{self.module}/{exposed.name}")
            Map([rule])  # binds the rule, as flask-smorest's spec plugin expects of routes
            spec.path(
                rule=rule,
                operations={
                    "post": {
                        "tags": [f"internal-{self.module}"],
                        "summary": (inspect.getdoc(exposed.local) or exposed.name).split("\n")[0],
                        "description": f'Returns `{{"result": {_type_name(exposed.hints.get("return", Any))}}}`.'
                        + (" Idempotent: safe to retry." if exposed.idempotent else ""),
                        "security": [{"serviceKey": []}],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                        "responses": {
                            "200": {"description": "The function's result"},
                            "400": {"description": "Invalid arguments (`validation_error`)"},
                            "401": {"description": "`service_key_invalid` or `service_caller_missing`"},
                            "403": {"description": "`service_scope_denied`: not in the caller's scope"},
                            "4XX": problem_response,
                            "503": problem_response,
                        },
                    }
                },
            )


def _type_name(type_: Any) -> str:
    """`tuple[Product, ...]` rather than `tuple[app.products.dto.Product, ...]`, for the docs."""
    name = type_.__name__ if isinstance(type_, type) and not typing.get_args(type_) else str(type_)
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", name)


def require_service_credentials() -> None:
    """Internal routes answer only a caller holding one of its keys in SERVICE_CALLER_KEYS
    (several per caller, so that a key can be rotated), compared in constant time, and naming
    itself as the caller that key belongs to."""
    sent = request.headers.get(SERVICE_KEY_HEADER, "").encode()
    callers = [
        caller
        for caller, key in current_app.extensions["settings"].service_caller_keys
        if hmac.compare_digest(sent, key.encode())
    ]
    if not sent or not callers:
        raise ApiError(401, "service_key_invalid", "A valid X-Service-Key header is required.")
    caller = request.headers.get(CALLER_HEADER, "").strip()
    if not caller:
        raise ApiError(401, "service_caller_missing", "The X-Service-Caller header must name the calling service.")
    if caller not in callers:
        raise ApiError(401, "service_key_invalid", f"This X-Service-Key is not the {caller} service's.")
    g.service_caller = caller
    g.actor = request.headers.get(ACTOR_HEADER, "")[:128] or SYSTEM  # whom the caller acts for (its events')


def in_scope(caller: str, module: str, function: str) -> bool:
    allowed = SERVICE_SCOPES.get(caller, {}).get(module, ())
    return "*" in allowed or function in allowed


def exception_name(error_class: type[DomainError]) -> str:
    return f"{error_class.__module__}.{error_class.__qualname__}"


def exception_class(name: str) -> type[DomainError] | None:
    """The DomainError subclass a service named, among those this process has loaded (no
    import by name: a service can only name exceptions the caller already knows)."""
    pending = [DomainError]
    while pending:
        candidate = pending.pop()
        if exception_name(candidate) == name:
            return candidate
        pending.extend(candidate.__subclasses__())
    return None
