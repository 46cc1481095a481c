"""Each process names itself in its spans, unless the OTEL_* variables name it."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.tracing import resource


@pytest.mark.parametrize(
    ("modules", "name"),
    [
        (("products", "cart", "accounts", "gateway"), "storefront"),
        (("gateway", "accounts"), "storefront-gateway"),
        (("cart",), "storefront-cart-service"),
        (("products",), "storefront-products-service"),
    ],
)
def test_service_name_by_the_modules_served(monkeypatch, modules, name):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert resource(Settings(modules=modules)).attributes["service.name"] == name


def test_the_otel_variables_name_the_service_first(monkeypatch):
    settings = Settings(modules=("cart",))
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=carts-eu,deployment.environment=staging")
    attributes = resource(settings).attributes
    assert (attributes["service.name"], attributes["deployment.environment"]) == ("carts-eu", "staging")

    monkeypatch.setenv("OTEL_SERVICE_NAME", "carts")
    assert resource(settings).attributes["service.name"] == "carts"
