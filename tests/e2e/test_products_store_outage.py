"""The products store goes down while shoppers use their carts: clear 503s, no line without
its stock hold, and no drift to repair once the store is back."""

from __future__ import annotations

import os

import requests

from tests.conftest import TEST_SECRET
from tests.e2e.gunicorn_server import gunicorn, run_flask
from tests.mongo_server import MongoServer, free_port


def test_outage_mid_shopping(database_url, app, token, admin_headers, tmp_path):
    mongo = MongoServer(tmp_path / "mongo", free_port(), persistent=True)
    (tmp_path / "mongo").mkdir()
    mongo.start()
    environment = {
        **os.environ,
        "APP_ENV": "development",
        # The app gives up on a store it cannot reach after 3 s (app/products/database.py): 1 s here.
        "MONGODB_URI": f"{mongo.uri}?serverSelectionTimeoutMS=1000",
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "THROTTLE_LIMIT": "100000",
        "CATALOG_CACHE_TTL": "0",
        "LOG_LEVEL": "WARNING",
    }
    shopper = {"Authorization": f"Bearer {token('customer', subject='outage-shopper')}"}
    try:
        with gunicorn(environment, tmp_path / "gunicorn.log") as url:
            for product_id in ("mug", "pen"):
                body = {
                    "productId": product_id,
                    "sku": f"SKU-{product_id}",
                    "name": product_id,
                    "price": "3.00",
                    "stock": 9,
                }
                assert (
                    requests.post(f"{url}/v1/products", json=body, headers=admin_headers, timeout=10).status_code == 201
                )
            add = {"productId": "mug", "quantity": 2}
            assert requests.post(f"{url}/v1/cart/products", json=add, headers=shopper, timeout=10).status_code == 201

            mongo.stop()
            refused = requests.post(
                f"{url}/v1/cart/products", json={"productId": "pen", "quantity": 1}, headers=shopper, timeout=30
            )
            assert refused.status_code == 503
            assert refused.headers["Content-Type"] == "application/problem+json"
            assert refused.json()["code"] == "dependency_unavailable"
            degraded = requests.get(f"{url}/v1/cart", headers=shopper, timeout=30).json()
            assert [(item["productId"], item["quantity"], item["available"]) for item in degraded["items"]] == [
                ("mug", 2, None)
            ]

            mongo.start()
            after = requests.get(f"{url}/v1/cart", headers=shopper, timeout=30).json()
            assert [(item["productId"], item["quantity"]) for item in after["items"]] == [("mug", 2)]
            stock = {pid: requests.get(f"{url}/v1/products/{pid}", timeout=10).json() for pid in ("mug", "pen")}
            assert (stock["mug"]["reserved"], stock["pen"]["reserved"]) == (2, 0)

        reconcile = run_flask(["inventory", "reconcile"], environment)
        assert reconcile.returncode == 0, reconcile.stderr
        assert "fixed 0" in reconcile.stdout
    finally:
        mongo.stop()
