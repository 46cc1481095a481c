"""Tracing is off, nothing patched and no provider installed, unless an OTLP endpoint is set
and neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none turns it off (the e2e test
tests/e2e/test_traces.py has it on)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from tests.conftest import GATEWAY_KEY

VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
)
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
HEADERS = {
    "X-Service-Key": GATEWAY_KEY,
    "X-Service-Caller": "gateway",
    "traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01",  # a traced caller's
}


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces", "OTEL_TRACES_EXPORTER": "none"},
    ],
    ids=["no endpoint", "sdk disabled", "exporter none"],
)
def test_tracing_off(monkeypatch, other_app, variables):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    service = other_app(modules=("products", "cart", "accounts"))

    seen = []
    service.before_request(lambda: seen.append(trace.get_current_span().get_span_context().trace_id))
    answer = service.test_client().post("/internal/products/get_product", json={"product_id": "nope"}, headers=HEADERS)

    assert answer.status_code == 404
    assert seen == [0]  # the caller's trace was not continued: no span, not even a non-recording one
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    patched = [
        instrumentor.is_instrumented_by_opentelemetry
        for instrumentor in (PymongoInstrumentor(), RedisInstrumentor(), RequestsInstrumentor())
    ]
    assert patched == [False, False, False]
