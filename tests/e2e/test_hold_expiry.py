"""Held stock comes back on its own: no sweeper runs, the hold just lapses.

gunicorn with two workers and CART_RESERVATION_TTL=1 (accepted outside production mode): a
buyer holds all 5 units, the hold lapses (1 s, plus the products module's 2 s grace), and
another buyer takes them; the first buyer's line says its reservation expired.
"""

from __future__ import annotations

import os
import time

import requests

from app.products.models import LAPSE_GRACE
from tests.conftest import TEST_SECRET
from tests.e2e.gunicorn_server import gunicorn

TTL = 1


def test_a_lapsed_hold_frees_its_units_for_the_next_buyer(mongo_uri, database_url, app, token, admin_headers, tmp_path):
    environment = {
        **os.environ,
        "APP_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "CART_RESERVATION_TTL": str(TTL),
        "CATALOG_CACHE_TTL": "0",
        "LOG_LEVEL": "WARNING",
    }
    environment.pop("REDIS_URL", None)
    first, second = ({"Authorization": f"Bearer {token('customer', subject=name)}"} for name in ("first", "second"))
    with gunicorn(environment, tmp_path / "gunicorn.log", workers=2) as url:
        product = {"productId": "rare", "sku": "RARE-1", "name": "Rare", "price": "5.00", "stock": 5}
        assert requests.post(f"{url}/v1/products", json=product, headers=admin_headers, timeout=10).status_code == 201
        add = {"productId": "rare", "quantity": 5}
        assert requests.post(f"{url}/v1/cart/products", json=add, headers=first, timeout=10).status_code == 201
        refused = requests.post(f"{url}/v1/cart/products", json=add, headers=second, timeout=10)
        assert (refused.status_code, refused.json()["code"]) == (409, "insufficient_stock")

        time.sleep(TTL + LAPSE_GRACE.total_seconds() + 0.5)  # no sweeper anywhere
        listed = requests.get(f"{url}/v1/products/rare", timeout=10).json()
        assert (listed["reserved"], listed["available"]) == (0, 5)
        taken = requests.post(f"{url}/v1/cart/products", json=add, headers=second, timeout=10)
        assert taken.status_code == 201, taken.text
        assert taken.json()["items"][0]["reservationExpired"] is False

        line = requests.get(f"{url}/v1/cart", headers=first, timeout=10).json()["items"][0]
        assert (line["quantity"], line["reservationExpired"]) == (5, True)
        rare = requests.get(f"{url}/v1/products/rare", timeout=10).json()
        assert (rare["stock"], rare["reserved"], rare["available"]) == (5, 5, 0)
