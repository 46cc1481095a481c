"""Traces across the split deployment: the three processes served with the repository's
gunicorn.conf.py (each worker's provider started in its post_fork hook), exporting over OTLP/HTTP
to a receiver on loopback. One add-to-cart through the gateway is one trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gunicorn_server import REPOSITORY_CONFIG
from tests.e2e.test_logs_served import json_lines
from tests.e2e.test_split_deployment import SplitDeployment, create_product, running
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

SERVICES = {
    "gateway": "storefront-gateway",
    "cart": "storefront-cart-service",
    "products": "storefront-products-service",
}
STORES = {"mongodb", "postgresql", "redis"}
ADD_TO_CART = "POST /v1/cart/products"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def traced(split_environment, receiver, tmp_path) -> Iterator[SplitDeployment]:
    environment = {
        **split_environment,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # milliseconds
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "METRICS_PORT": "0",  # gunicorn.conf.py's metrics listener: none
    }
    split = SplitDeployment(environment, tmp_path, config=REPOSITORY_CONFIG, workers=1)
    with running(split):
        yield split


def store(span: ReceivedSpan) -> str | None:
    return span.attributes.get("db.system") or span.attributes.get("db.system.name")


def whole_trace(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan] | None:
    """The root's trace once it holds spans of the three services and of the three stores, and
    every span's parent."""
    members = [span for span in spans if span.trace_id == root.trace_id]
    ids = {span.span_id for span in members}
    complete = (
        {span.service for span in members} == set(SERVICES.values())
        and {store(span) for span in members} >= STORES
        and all(span.parent_span_id in ids for span in members if span is not root)
    )
    return members if complete else None


def test_one_add_to_cart_is_one_trace_across_the_three_services(traced, receiver, admin_headers, token, tmp_path):
    url = traced.gateway_url
    create_product(url, admin_headers, "mug", stock=5)
    buyer = {"Authorization": f"Bearer {token('customer', subject='traced-buyer')}"}

    added = requests.post(
        f"{url}/v1/cart/products", json={"productId": "mug", "quantity": 2}, headers=buyer, timeout=10
    )
    assert added.status_code == 201, added.text

    [root] = receiver.wait_for(
        lambda spans: [span for span in spans if span.name == ADD_TO_CART and span.service == SERVICES["gateway"]]
    )
    assert root.parent_span_id == ""  # the gateway started the trace
    members = receiver.wait_for(lambda spans: whole_trace(spans, root))
    assert {span.service for span in members if store(span) == "mongodb"} == {SERVICES["products"]}
    assert SERVICES["cart"] in {span.service for span in members if store(span) == "postgresql"}
    # Each log line of the request, in each process, names the trace: the request id crossed
    # the hops with the trace context.
    request_id = added.headers["X-Request-ID"]
    for name in SERVICES:
        lines = [line for line in json_lines(tmp_path / f"{name}.log") if line.get("request_id") == request_id]
        assert [line for line in lines if line.get("event") == "access"], name
        assert {line["trace_id"] for line in lines} == {root.trace_id}, name
    [gateway_access] = [
        line
        for line in json_lines(tmp_path / "gateway.log")
        if line.get("event") == "access" and line.get("request_id") == request_id
    ]
    assert gateway_access["span_id"] == root.span_id
