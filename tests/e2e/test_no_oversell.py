"""50 buyers race for 20 units through the HTTP API, served by gunicorn with two workers."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import TEST_SECRET
from tests.e2e.gunicorn_server import gunicorn

BUYERS = 50
STOCK = 20


def test_fifty_buyers_twenty_units_exactly_twenty_sales(mongo_uri, database_url, app, token, admin_headers, tmp_path):
    environment = {
        **os.environ,
        "APP_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "THROTTLE_LIMIT": "100000",
        "CATALOG_CACHE_TTL": "0",
        "LOG_LEVEL": "WARNING",
    }
    buyers = [{"Authorization": f"Bearer {token('customer', subject=f'buyer-{number}')}"} for number in range(BUYERS)]
    with gunicorn(environment, tmp_path / "gunicorn.log", workers=2) as url:
        product = {"productId": "hot", "sku": "HOT-1", "name": "Hot item", "price": "9.99", "stock": STOCK}
        assert requests.post(f"{url}/v1/products", json=product, headers=admin_headers, timeout=10).status_code == 201

        def buy(headers: dict[str, str]) -> int:
            body = {"productId": "hot", "quantity": 1}
            return requests.post(f"{url}/v1/cart/products", json=body, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=BUYERS) as pool:
            statuses = list(pool.map(buy, buyers))
        assert (statuses.count(201), statuses.count(409)) == (STOCK, BUYERS - STOCK)
        hot = requests.get(f"{url}/v1/products/hot", timeout=10).json()
        assert (hot["stock"], hot["reserved"], hot["available"]) == (STOCK, STOCK, 0)

        winners = [headers for headers, status in zip(buyers, statuses, strict=True) if status == 201]

        def check_out(headers: dict[str, str]) -> int:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            return requests.post(f"{url}/v1/cart/checkout", headers={**headers, **key}, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=len(winners)) as pool:
            assert set(pool.map(check_out, winners)) == {201}
        hot = requests.get(f"{url}/v1/products/hot", timeout=10).json()
        assert (hot["stock"], hot["reserved"]) == (0, 0)
