"""OpenTelemetry traces, configured only by the standard OTEL_* variables, which the SDK reads.

On when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT), unless
OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none; off, nothing is patched and nothing costs.
On, `instrument` traces the app (Flask), its SQL engine (SQLAlchemy), pymongo, redis and
requests: a call to another service carries W3C `traceparent` (requests) and the service
continues that trace (Flask), so one request through the gateway and the services is one trace.

The provider's BatchSpanProcessor exports from a thread of its own, and a thread does not
survive fork: under gunicorn each worker starts its provider in `post_fork` (gunicorn.conf.py,
which calls `leave_provider_to_workers` first), so that a create_app run in the master, as with
--preload, only patches libraries (their tracers are proxies that find the worker's provider
later). Anywhere else (the flask CLI, tests) create_app starts the provider itself.
"""

from __future__ import annotations

import os

from flask import Flask
from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation import sqlalchemy as sqlalchemy_tracing
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpUpDownCounter
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.engine import Engine

from app.config import MODULES, Settings

_provider: TracerProvider | None = None
_provider_left_to_workers = False


def enabled() -> bool:
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return False
    if os.environ.get(OTEL_TRACES_EXPORTER, "").strip().lower() == "none":
        return False
    return bool(os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT))


def default_service_name(settings: Settings) -> str:
    if set(settings.modules) == set(MODULES):
        return "storefront"
    if settings.serves("gateway"):
        return "storefront-gateway"
    return f"storefront-{settings.modules[0]}-service"


def resource(settings: Settings) -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), named after the
    process's modules when those variables name no service."""
    named = SERVICE_NAME in OTELResourceDetector().detect().attributes
    return Resource.create({} if named else {SERVICE_NAME: default_service_name(settings)})


def instrument(app: Flask, settings: Settings, engine: Engine) -> None:
    """Before the app makes its MongoDB client (pymongo traces the clients made after) and adds
    its other request hooks (so that their log lines carry the trace too)."""
    if not enabled():
        return
    FlaskInstrumentor.instrument_app(app)
    # SQLAlchemyInstrumentor().instrument() would also patch sqlalchemy.ext.asyncio, which the
    # pinned SQLAlchemy 2.1 cannot import without greenlet: its tracer of one engine instead
    # (pool usage is not counted here: app/metrics.py has it).
    EngineTracer(
        trace.get_tracer(sqlalchemy_tracing.__name__), engine, NoOpUpDownCounter("db.client.connections.usage")
    )
    for instrumentor in (PymongoInstrumentor(), RedisInstrumentor(), RequestsInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
    if not _provider_left_to_workers:
        start_provider(settings)


def leave_provider_to_workers() -> None:
    """gunicorn.conf.py, in the master: each worker's `post_fork` starts the provider."""
    global _provider_left_to_workers
    _provider_left_to_workers = True


def start_provider(settings: Settings) -> None:
    """The global TracerProvider: sampler (OTEL_TRACES_SAMPLER[_ARG]), exporter endpoint and
    batch (OTEL_BSP_*) settings as the SDK reads them. Once per process; nothing when off."""
    global _provider
    if _provider is not None or not enabled():
        return
    _provider = TracerProvider(resource=resource(settings))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)


def shutdown() -> None:
    """Export the spans still queued (gunicorn's `worker_exit`)."""
    if _provider is not None:
        _provider.shutdown()
