"""One logging stack for the app and gunicorn: structlog rendering standard-library records.

Every logger (the app's `logging.getLogger(__name__)`, gunicorn's error and access logs)
ends in a handler with `formatter()`, a structlog ProcessorFormatter: JSON lines when
LOG_FORMAT=json (the production default), readable console lines otherwise. Inside a request,
each line carries the request's context (`request_fields`): its request id, trace and span ids,
route template, user or guest id and, on /internal, the calling service. `redact` is the
safety net that keeps secrets out of every line.
"""

from __future__ import annotations

import logging
import re
import string
import sys
import uuid
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from flask import Flask, g, has_request_context, request
from opentelemetry import trace

from app.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
# Where after_request leaves the request's fields for gunicorn's access line, which is written
# once the Flask request context is gone.
ENVIRON_KEY = "storefront.log_fields"
REDACTED = "[redacted]"
# Event keys whose values are secrets, whatever they hold (matched on the lower-cased key).
SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authori[sz]ation|cookie|service[_-]?key|api[_-]?key|otp|totp|mfa[_-]?code|credential"
)
# Values that are secrets wherever they appear: JWTs (three base64url parts, header first) and
# bearer credentials.
SECRET_VALUES = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*|(?i:bearer)\s+\S+")
# `password=x`, `"token": "x"`, `otp: x` inside a message: the name stays, the value goes.
SECRET_ASSIGNMENTS = re.compile(
    r"""((?i:pass(?:word)?|secret|token|otp|totp|service[_-]?key|api[_-]?key)\w*["']?\s*[:=]\s*["']?)[^\s"',;&}]+"""
)
PRINTABLE = frozenset(string.printable) - frozenset("\t\n\r\x0b\x0c")
_known_secrets: set[str] = set()


def trace_context() -> tuple[str | None, str | None]:
    """The current span's trace id (32 hex digits) and span id (16), or Nones without one
    (tracing off, app/tracing.py, or outside a traced request)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def sane_request_id(value: str | None) -> str | None:
    """A client's X-Request-ID when it is printable ASCII (spaces allowed) of 1 to 128 characters."""
    if not value or len(value) > MAX_REQUEST_ID_LENGTH or not set(value) <= PRINTABLE or not value.strip():
        return None
    return value


def request_id() -> str:
    """This request's id: the caller's X-Request-ID when sane, else a new one (uuid4 hex)."""
    if "request_id" not in g:
        g.request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or uuid.uuid4().hex
    return g.request_id


def current_request_id() -> str | None:
    """The id of the request being served, to send on with each call to another service."""
    return request_id() if has_request_context() else None


def request_fields() -> dict[str, Any]:
    """The fields every line written inside the current request carries."""
    trace_id, span_id = trace_context()
    claims = g.get("_jwt_extended_jwt") or {}  # what flask-jwt-extended verified, never decoded again
    subject = claims.get("sub")
    return {
        "request_id": request_id(),
        "trace_id": trace_id,
        "span_id": span_id,
        "route": request.url_rule.rule if request.url_rule is not None else None,
        "user_id": subject if subject and not str(subject).startswith("guest:") else None,
        "guest_id": subject if subject and str(subject).startswith("guest:") else None,
        "caller": g.get("service_caller"),
    }


def add_request_fields(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if has_request_context():
        for name, value in request_fields().items():
            event.setdefault(name, value)
    return event


def remember_secrets(values: Iterable[str | None]) -> None:
    """Values (the service keys, the JWT secret, SMTP password) redacted wherever they appear."""
    _known_secrets.update(value for value in values if value and len(value) >= 8)


def _redact_text(text: str) -> str:
    text = SECRET_VALUES.sub(REDACTED, text)
    text = SECRET_ASSIGNMENTS.sub(lambda match: match.group(1) + REDACTED, text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, dict):
        return {
            key: REDACTED if SECRET_KEYS.search(str(key).lower()) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A safety net: no line may carry a password, token, Authorization header, service key or
    TOTP code, whatever a caller passed. Secret-named keys lose their value; JWTs, bearer
    credentials and the known secret values are cut out of every string."""
    for key, value in list(event.items()):
        if key in ("_record", "_from_structlog"):
            continue
        if SECRET_KEYS.search(key.lower()):
            event[key] = REDACTED
        else:
            event[key] = _redact_value(value)
    return event


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_request_fields,
    ]


def _drop_formatted_message(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A record another handler formatted first has `message` too: the event already says it."""
    if event.get("message") == event.get("event"):
        event.pop("message", None)
    return event


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of every handler: stdlib records and structlog events rendered alike."""
    if log_format == "json":
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # Plain tracebacks: rich's or better-exceptions' would print local variables (passwords).
        renderer = [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_formatted_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact, *renderer],
    )


def configure(settings: Settings) -> None:
    """Route structlog through the standard library, and give the root logger our handler
    (only when nothing else, such as pytest's capture, handles it already: as basicConfig)."""
    remember_secrets(
        [
            settings.jwt_secret,
            settings.service_api_key,
            settings.mail.smtp_password,
            *(key for _caller, key in settings.service_caller_keys),
        ]
    )
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in [handler for handler in root.handlers if getattr(handler, "storefront", False)]:
        root.removeHandler(handler)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.storefront = True
        handler.setFormatter(formatter(settings.log_format))
        root.addHandler(handler)
        root.setLevel(settings.log_level)


def init_app(app: Flask) -> None:
    """Echo the request id in the response, and leave the request's fields for the access line."""

    @app.after_request
    def _request_id_header(response):
        fields = request_fields()
        response.headers[REQUEST_ID_HEADER] = fields["request_id"]
        request.environ[ENVIRON_KEY] = fields
        return response


def wrap_gunicorn_logger(logger: logging.Logger, log_format: str) -> structlog.stdlib.BoundLogger:
    """Give one of gunicorn's loggers our formatter, and a structlog logger writing to it (the
    access line, which gunicorn writes outside any request context)."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(log_format))
    return structlog.wrap_logger(
        logger,
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def access_fields(environ: dict[str, Any], header_request_id: str | None) -> dict[str, Any]:
    """The request's fields for its access line, as after_request left them; for a request the
    app never saw (refused by gunicorn itself), the caller's id when sane and nulls."""
    fields = environ.get(ENVIRON_KEY)
    if fields is not None:
        return fields
    trace_id, span_id = trace_context()
    return {
        "request_id": sane_request_id(header_request_id),
        "trace_id": trace_id,
        "span_id": span_id,
        "route": None,
        "user_id": None,
        "guest_id": None,
        "caller": None,
    }
