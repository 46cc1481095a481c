"""The split deployment: products, cart and gateway+accounts as three gunicorn processes on
loopback, like the original system's three services, talking through their HTTP ports.

A buyer's whole journey goes through the gateway; then the products service is killed
mid-run (clear 503s with Retry-After, nothing oversold or lost, recovery without restarting
anything else), and Redis is stopped (the gateway degrades and keeps serving).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from app.gateway.health import MAX_AGE_SECONDS as HEALTH_MAX_AGE
from tests.e2e.gunicorn_server import TEST_CONFIG, Gunicorn, run_flask, start_all, stop_all
from tests.integration.test_auth_api import PASSWORD, last_email, token_from
from tests.tls import CertificateAuthority

GATEWAY_KEY = "split-test-gateway-key-0123456789"  # the gateway's, to the products and cart services
CART_KEY = "split-test-cart-key-0123456789"  # the cart service's, to the products service


@dataclass
class SplitDeployment:
    base_environment: dict[str, str]
    workdir: Path
    tls: CertificateAuthority | None = None  # mutual TLS between the services, each with its certificate
    config: str = TEST_CONFIG  # gunicorn's, for each process
    workers: int = 2
    products: Gunicorn = field(init=False)
    cart: Gunicorn = field(init=False)
    gateway: Gunicorn = field(init=False)

    def __post_init__(self) -> None:
        self.products = self._server(
            "products", {"APP_MODULES": "products", "SERVICE_CALLER_KEYS": f"gateway={GATEWAY_KEY},cart={CART_KEY}"}
        )
        self.cart = self._server(
            "cart",
            {
                "APP_MODULES": "cart",
                "PRODUCTS_SERVICE_URL": self.products_url,
                "SERVICE_API_KEY": CART_KEY,
                "SERVICE_CALLER_KEYS": f"gateway={GATEWAY_KEY}",
            },
        )
        self.gateway = self._server(
            "gateway",
            {
                "APP_MODULES": "gateway,accounts",
                "PRODUCTS_SERVICE_URL": self.products_url,
                "CART_SERVICE_URL": self.cart_url,
                "SERVICE_API_KEY": GATEWAY_KEY,
            },
        )

    @property
    def products_url(self) -> str:
        return self.products.url

    @property
    def cart_url(self) -> str:
        return self.cart.url

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    def start(self) -> None:
        """The three processes boot together; each is asked for its health once those it calls serve."""
        start_all(self.products, self.cart, self.gateway)

    def start_products_service(self) -> None:
        start_all(self.products)  # on its port of before

    def kill_products_service(self) -> None:
        stop_all(self.products)

    def stop(self) -> None:
        stop_all(self.products, self.cart, self.gateway)

    def _server(self, name: str, extra: dict[str, str]) -> Gunicorn:
        environment = {**self.base_environment, **extra}
        client_tls = None
        if self.tls:
            environment.update(self.tls.environment(name))
            if name != "gateway":  # a service: its listener requires a client certificate
                client_tls = self.tls.issue("test-client")
        log = self.workdir / f"{name}.log"
        return Gunicorn(environment, log, workers=self.workers, threads=4, client_tls=client_tls, config=self.config)


@contextmanager
def running(split: SplitDeployment) -> Iterator[SplitDeployment]:
    try:
        split.start()
        yield split
    finally:
        split.stop()


@pytest.fixture
def deployment(split_environment, tmp_path) -> Iterator[SplitDeployment]:
    with running(SplitDeployment(split_environment, tmp_path)) as split:
        yield split


@pytest.fixture
def mtls_deployment(split_environment, tmp_path) -> Iterator[SplitDeployment]:
    """The same three processes, the services speaking mutual TLS (a CA of the test's own)."""
    with running(SplitDeployment(split_environment, tmp_path, tls=CertificateAuthority(tmp_path))) as split:
        yield split


def create_product(url: str, admin_headers: dict, product_id: str, stock: int, price: str = "5.00") -> None:
    body = {"productId": product_id, "sku": f"SKU-{product_id}", "name": product_id, "price": price, "stock": stock}
    response = requests.post(f"{url}/v1/products", json=body, headers=admin_headers, timeout=10)
    assert response.status_code == 201, response.text


def sign_up(url: str, mail_dir: Path, address: str) -> dict[str, str]:
    """Register, verify the address from the emailed link, log in: the buyer's auth headers."""
    assert requests.post(f"{url}/v1/auth/register", json={"email": address, "password": PASSWORD}, timeout=10).ok
    token = token_from(last_email(mail_dir, address))
    assert requests.post(f"{url}/v1/auth/verify-email", json={"token": token}, timeout=10).status_code == 200
    login = requests.post(f"{url}/v1/auth/login", json={"email": address, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['accessToken']}"}


def product(url: str, product_id: str) -> dict:
    return requests.get(f"{url}/v1/products/{product_id}", timeout=10).json()


def test_buyer_journey_through_the_split_gateway(deployment, admin_headers, mail_dir):
    buyer_journey(deployment, admin_headers, mail_dir)


def test_buyer_journey_with_mutual_tls_between_the_services(mtls_deployment, admin_headers, mail_dir):
    assert mtls_deployment.products_url.startswith("https://")
    assert mtls_deployment.cart_url.startswith("https://")
    buyer_journey(mtls_deployment, admin_headers, mail_dir)
    plain = mtls_deployment.products_url.replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):  # the listener speaks TLS only
        requests.get(f"{plain}/v1/health", timeout=5)


def buyer_journey(deployment: SplitDeployment, admin_headers: dict, mail_dir: Path) -> None:
    url = deployment.gateway_url
    create_product(url, admin_headers, "mug", stock=5, price="7.50")
    create_product(url, admin_headers, "pen", stock=5, price="1.25")
    buyer = sign_up(url, mail_dir, "split-buyer@example.test")

    listed = requests.get(f"{url}/v1/products", timeout=10).json()
    assert sorted(item["productId"] for item in listed) == ["mug", "pen"]
    for product_id, quantity in (("mug", 2), ("pen", 3)):
        added = requests.post(
            f"{url}/v1/cart/products", json={"productId": product_id, "quantity": quantity}, headers=buyer, timeout=10
        )
        assert added.status_code == 201, added.text
    assert requests.delete(f"{url}/v1/cart/products/pen", headers=buyer, timeout=10).status_code == 200
    cart = requests.get(f"{url}/v1/cart", headers=buyer, timeout=10).json()
    assert [(item["productId"], item["quantity"], item["available"]) for item in cart["items"]] == [
        ("mug", 2, 3),
        ("pen", 2, 3),
    ]
    assert cart["totalPrice"] == "17.50"

    headers = {**buyer, "Idempotency-Key": "split-checkout-1"}
    order = requests.post(f"{url}/v1/cart/checkout", headers=headers, timeout=10)
    assert order.status_code == 201, order.text
    assert order.json()["totalPrice"] == "17.50"
    orders = requests.get(f"{url}/v1/orders", headers=buyer, timeout=10).json()
    assert [listed_order["orderId"] for listed_order in orders] == [order.json()["orderId"]]
    assert [(product(url, pid)["stock"], product(url, pid)["reserved"]) for pid in ("mug", "pen")] == [(3, 0), (3, 0)]

    health = requests.get(f"{url}/v1/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["dependencies"]["productsService"] == {"status": "ok"}  # no internal URLs
    assert health["dependencies"]["cartService"] == {"status": "ok"}


@pytest.mark.parametrize("service", ["products", "cart"])
def test_internal_routes_refuse_callers_without_the_service_key(deployment, service):
    service_url = deployment.products_url if service == "products" else deployment.cart_url
    function = "get_product" if service == "products" else "get_cart"
    body = {"product_id": "mug"} if service == "products" else {"owner_id": "someone"}

    refused = requests.post(f"{service_url}/internal/{service}/{function}", json=body, timeout=10)
    wrong = requests.post(
        f"{service_url}/internal/{service}/{function}",
        json=body,
        headers={"X-Service-Key": "not-the-key", "X-Service-Caller": "intruder"},
        timeout=10,
    )

    assert (refused.status_code, refused.json()["code"]) == (401, "service_key_invalid")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "service_key_invalid")


def test_each_key_calls_only_its_callers_functions_and_the_gateway_serves_no_internal_route(deployment):
    cart_service = {"X-Service-Key": CART_KEY, "X-Service-Caller": "cart"}
    read = requests.post(
        f"{deployment.products_url}/internal/products/get_product",
        json={"product_id": "none"},
        headers=cart_service,
        timeout=10,
    )
    adjust = requests.post(
        f"{deployment.products_url}/internal/products/adjust_stock",
        json={"product_id": "none", "delta": 5, "reason": "free stock"},
        headers=cart_service,
        timeout=10,
    )
    on_gateway = requests.post(
        f"{deployment.gateway_url}/internal/products/get_product",
        json={"product_id": "none"},
        headers={"X-Service-Key": GATEWAY_KEY, "X-Service-Caller": "gateway"},
        timeout=10,
    )

    assert (read.status_code, read.json()["code"]) == (404, "product_not_found")  # let through, then not found
    assert (adjust.status_code, adjust.json()["code"]) == (403, "service_scope_denied")
    assert on_gateway.status_code == 404
    public_paths = requests.get(f"{deployment.gateway_url}/api/openapi.json", timeout=10).json()["paths"]
    assert not [path for path in public_paths if path.startswith("/internal")]


def test_products_service_killed_mid_run_then_back(deployment, admin_headers, token, database_url, mongo_uri):
    url = deployment.gateway_url
    create_product(url, admin_headers, "mug", stock=4)
    buyer = {"Authorization": f"Bearer {token('customer', subject='split-outage-buyer')}"}

    def add(quantity: int = 1) -> requests.Response:
        return requests.post(
            f"{url}/v1/cart/products", json={"productId": "mug", "quantity": quantity}, headers=buyer, timeout=30
        )

    assert add(2).status_code == 201
    deployment.kill_products_service()

    refusals = [add() for _ in range(6)]
    for refused in refusals:
        assert refused.status_code == 503, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert refused.json()["code"] == "dependency_unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
    assert any("paused" in refused.json()["detail"] for refused in refusals)  # a cart worker's breaker opened
    cart = requests.get(f"{url}/v1/cart", headers=buyer, timeout=30)
    assert cart.status_code == 200
    assert [(item["productId"], item["quantity"], item["available"]) for item in cart.json()["items"]] == [
        ("mug", 2, None)
    ]
    last_failure = time.monotonic()  # no breaker opened after this

    deployment.start_products_service()
    time.sleep(max(last_failure + 1.1 - time.monotonic(), 0))  # BREAKER_RESET_SECONDS: the next call is the probe
    assert add().status_code == 201
    cart = requests.get(f"{url}/v1/cart", headers=buyer, timeout=30).json()
    assert [(item["quantity"], item["available"]) for item in cart["items"]] == [(3, 1)]
    assert product(url, "mug")["reserved"] == 3  # no refused add held stock, none was lost

    environment = {**os.environ, "APP_ENV": "development", "MONGODB_URI": mongo_uri, "DATABASE_URL": database_url}
    reconcile = run_flask(["inventory", "reconcile"], environment)
    assert reconcile.returncode == 0, reconcile.stderr
    assert "fixed 0" in reconcile.stdout


def test_redis_stopped_gateway_degrades_and_keeps_serving(deployment, private_redis, admin_headers, token):
    url = deployment.gateway_url
    create_product(url, admin_headers, "mug", stock=4)
    buyer = {"Authorization": f"Bearer {token('customer', subject='split-redis-buyer')}"}
    assert requests.get(f"{url}/v1/health", timeout=10).json()["dependencies"]["redis"]["status"] == "ok"
    last_report = time.monotonic()  # the gateway's health reports from before the stop were made before this

    private_redis.stop()

    assert requests.get(f"{url}/v1/products", timeout=10).status_code == 200
    added = requests.post(
        f"{url}/v1/cart/products", json={"productId": "mug", "quantity": 1}, headers=buyer, timeout=10
    )
    assert added.status_code == 201, added.text
    assert requests.get(f"{url}/v1/cart", headers=buyer, timeout=10).status_code == 200
    time.sleep(max(last_report + HEALTH_MAX_AGE - time.monotonic(), 0))  # they have aged out
    health = requests.get(f"{url}/v1/health", timeout=10)
    assert health.status_code == 200  # still serving: degraded, not down
    assert health.json()["status"] == "degraded"
    assert health.json()["dependencies"]["redis"]["status"] == "down"
