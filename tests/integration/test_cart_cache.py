"""The cart cache (REDIS_URL set): reads come from Redis, yet every write shows at once.

The app here caches for a minute, far longer than any test runs, so what a test sees is
decided by the generation protocol alone, never by an entry that happened to expire. To tell
a cached answer from a fresh one, a test changes the database behind the app's back (no
cart write through the API, so no new generation): the cache does not see that, a real
write does.
"""

from __future__ import annotations

import logging
import pickle
from datetime import timedelta
from decimal import Decimal

import pytest
import redis

from app import create_app
from app.cart.cache import KEY_PREFIX, CartCache
from app.cart.dto import Cart
from app.cart.models import utcnow
from app.cart.sweep import sweep
from app.extensions import db, limiter
from tests.integration.test_cart_api import add, create
from tests.integration.test_cart_sweep import edit_lines
from tests.metric_counts import Counts
from tests.mongo_server import free_port

TTL = 60


@pytest.fixture
def cached_app(settings, redis_url):
    """An app with the cart cache on; the shared limiter gets its storage back afterwards."""
    store = redis.Redis.from_url(redis_url)

    def forget() -> None:
        for key in store.scan_iter(match=KEY_PREFIX + "*"):
            store.delete(key)

    forget()
    storage, strategy = limiter._storage, limiter._limiter
    app = create_app(settings.override(redis_url=redis_url, cart_cache_ttl=TTL))
    yield app
    with app.app_context():
        db.engine.dispose()
    limiter._storage, limiter._limiter = storage, strategy
    forget()
    store.close()


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='cached-shopper')}"}


@pytest.fixture
def cached(cached_app, client, admin_headers):
    """A client of the caching app, and the products "mug" and "pen" (created through `client`)."""
    create(client, admin_headers, "mug", price="4.00", stock=10)
    create(client, admin_headers, "pen", price="1.50", stock=10)
    return cached_app.test_client()


def behind_the_back(app, product_id: str, quantity: int) -> None:
    """Change a line in PostgreSQL without a cart write (so without a new generation)."""

    def change(line) -> None:
        if line.product_id == product_id:
            line.quantity = quantity

    edit_lines(app, change)


def quantities(response) -> dict[str, int]:
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return {item["productId"]: item["quantity"] for item in response.get_json()["items"]}


def test_reads_are_cached_and_every_write_shows_at_once(cached_app, cached, shopper):
    assert quantities(add(cached, shopper, "mug", 2)) == {"mug": 2}
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 2}
    behind_the_back(cached_app, "mug", 7)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 2}  # served from the cache

    assert quantities(add(cached, shopper, "pen")) == {"mug": 7, "pen": 1}  # a write reads the database
    got = cached.get("/v1/cart", headers=shopper)
    assert quantities(got) == {"mug": 7, "pen": 1}
    assert got.headers["ETag"] == f'"{got.get_json()["version"]}"'

    version = got.get_json()["version"]
    cached.get("/v1/cart", headers=shopper)  # cached again, then each kind of write:
    cached.put("/v1/cart/products/pen", json={"quantity": 3}, headers=shopper)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 7, "pen": 3}
    cached.delete("/v1/cart/products/mug", headers=shopper)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 6, "pen": 3}
    cached.delete("/v1/cart/products/pen?all=true", headers=shopper)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 6}
    cached.delete("/v1/cart", headers=shopper)
    emptied = cached.get("/v1/cart", headers=shopper).get_json()
    assert (emptied["items"], emptied["version"]) == ([], version + 4)


def test_a_failed_write_changes_nothing_cached(cached, shopper):
    add(cached, shopper, "mug", 2)
    cached.get("/v1/cart", headers=shopper)
    assert add(cached, shopper, "mug", 50).status_code == 409  # more than the 10 in stock
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 2}


def test_the_line_just_changed_shows_fresh_figures(client, cached, admin_headers, shopper):
    """Other lines may show product figures up to CART_CACHE_TTL old; the one changed never."""
    add(cached, shopper, "mug", 2)
    add(cached, shopper, "pen", 1)
    client.post("/v1/products/mug/stock", json={"delta": 5, "reason": "delivery"}, headers=admin_headers)

    items = {item["productId"]: item for item in add(cached, shopper, "mug").get_json()["items"]}
    assert items["mug"]["available"] == 15 - 3
    assert items["pen"]["available"] == 10 - 1


def test_checkout_and_merge_move_the_generation_on(cached, shopper):
    add(cached, shopper, "mug", 2)
    cached.get("/v1/cart", headers=shopper)
    placed = cached.post("/v1/cart/checkout", headers={**shopper, "Idempotency-Key": "cached-checkout"})
    assert placed.status_code == 201, placed.get_data(as_text=True)
    after = cached.get("/v1/cart", headers=shopper).get_json()
    assert after["items"] == []
    assert after["shoppingCartId"] != placed.get_json()["shoppingCartId"]

    guest_token = cached.post("/v1/auth/guest").get_json()["accessToken"]
    guest = {"Authorization": f"Bearer {guest_token}"}
    add(cached, guest, "pen", 2)
    cached.get("/v1/cart", headers=guest)
    merged = cached.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=shopper)
    assert merged.status_code == 200, merged.get_data(as_text=True)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"pen": 2}
    assert quantities(cached.get("/v1/cart", headers=guest)) == {}  # the guest's cart was merged away


def test_the_sweeper_moves_the_generation_on(cached_app, cached, shopper):
    add(cached, shopper, "mug", 2)
    cached.get("/v1/cart", headers=shopper)
    with cached_app.app_context():
        report = sweep(now=utcnow() + timedelta(days=1))  # every hold has expired by then
    assert report.lines_released == 1
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {}


def a_cart(name: str) -> Cart:
    return Cart(name, "owner", "USD", Decimal("0.00"), 0, (), 1)


def test_a_write_while_a_reader_loads_is_never_served_stale(cached_app):
    """The race: a reader misses, a write commits while it loads, then it stores what it read.
    Only that reader answers the older cart (it began before the write); nobody after it."""
    cache = cached_app.extensions["carts"].cache
    before, after = a_cart("the cart before the write"), a_cart("the cart after the write")

    def load_while_a_write_commits():
        cache.changed("racing-owner")  # the write's commit and new generation land here
        return before, True

    assert cache.cart("racing-owner", load_while_a_write_commits) == before
    assert cache.cart("racing-owner", lambda: (after, True)) == after
    assert cache.cart("racing-owner", lambda: (a_cart("not read: cached"), True)) == after


def test_a_cart_read_without_the_products_store_is_not_cached(cached_app):
    cache = cached_app.extensions["carts"].cache
    degraded, complete = a_cart("degraded"), a_cart("complete")
    assert cache.cart("owner-x", lambda: (degraded, False)) == degraded
    assert cache.cart("owner-x", lambda: (complete, True)) == complete


def test_without_redis_nothing_is_cached(app, client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    add(client, shopper, "mug", 2)
    client.get("/v1/cart", headers=shopper)
    behind_the_back(app, "mug", 7)
    assert quantities(client.get("/v1/cart", headers=shopper)) == {"mug": 7}


def test_a_redis_outage_falls_back_to_the_databases(app, client, admin_headers):
    create(client, admin_headers, "mug")
    down = CartCache.build(f"redis://127.0.0.1:{free_port()}/0", TTL, timeout=0.2)
    assert down.cart("owner-y", lambda: ("from the databases", True)) == "from the databases"
    down.changed("owner-y")  # logged, not raised: the write has committed already
    with app.app_context():
        assert [product.sku for product in down.products(["mug"], fresh=()).values()] == ["SKU-MUG"]


def test_a_miss_stores_the_cart_and_the_snapshots_it_read_each_with_the_ttl(cached_app, cached, shopper, redis_url):
    add(cached, shopper, "mug", 2)
    add(cached, shopper, "pen", 1)
    owner_id = cached.get("/v1/cart", headers=shopper).get_json()["userId"]
    store = redis.Redis.from_url(redis_url)
    keys = [f"{KEY_PREFIX}{key}" for key in (f"cart:{owner_id}", "product:mug", "product:pen")]
    store.delete(*keys)  # what expiry does
    cached_app.extensions["carts"].cache.changed(owner_id)

    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 2, "pen": 1}  # a miss
    assert [0 < store.ttl(key) <= TTL for key in keys] == [True, True, True]
    behind_the_back(cached_app, "mug", 7)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 2, "pen": 1}  # what the miss stored
    store.close()


def test_a_failed_store_is_logged_and_the_cart_still_answers(cached_app, cached, shopper, monkeypatch, caplog):
    add(cached, shopper, "mug", 2)
    owner_id = cached.get("/v1/cart", headers=shopper).get_json()["userId"]
    cache = cached_app.extensions["carts"].cache
    cache.changed(owner_id)

    def unreachable(**_):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(cache, "_store_script", unreachable)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 2}
    assert "could not store an entry: Redis went away" in caplog.text
    monkeypatch.undo()
    behind_the_back(cached_app, "mug", 7)
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 7}  # nothing was stored


class CreatesAFile:
    """Unpickling this creates a file: the proof that a pickle someone wrote to Redis ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_written_into_redis_is_never_run_and_the_cart_comes_from_the_databases(
    cached_app, cached, shopper, redis_url, tmp_path, caplog
):
    """Finding 6 of the audit: whoever can write to Redis must not run code in the app."""
    add(cached, shopper, "mug", 2)
    add(cached, shopper, "pen", 1)
    owner_id = cached.get("/v1/cart", headers=shopper).get_json()["userId"]  # cached now
    store = redis.Redis.from_url(redis_url)
    generation = store.get(f"{KEY_PREFIX}generation:{owner_id}")
    ran = tmp_path / "pwned"
    payload = pickle.dumps(CreatesAFile(ran))
    store.set(f"{KEY_PREFIX}cart:{owner_id}", b"!" + payload, ex=TTL)  # as flask-caching's RedisCache wrote
    assert store.get(f"{KEY_PREFIX}generation:{owner_id}") == generation  # the entry would be current
    behind_the_back(cached_app, "mug", 7)

    with caplog.at_level(logging.WARNING, logger="app.cart.cache"):
        read = cached.get("/v1/cart", headers=shopper)
        assert quantities(read) == {"mug": 7, "pen": 1}  # read from the databases
        store.set(f"{KEY_PREFIX}product:pen", payload, ex=TTL)  # a write reads the other lines' snapshots
        assert quantities(add(cached, shopper, "mug")) == {"mug": 8, "pen": 1}  # the pen's snapshot too

    assert not ran.exists()
    assert f"ignoring {KEY_PREFIX}cart:{owner_id}, which does not decode" in caplog.text
    assert f"ignoring {KEY_PREFIX}product:pen, which does not decode" in caplog.text
    assert quantities(cached.get("/v1/cart", headers=shopper)) == {"mug": 8, "pen": 1}
    for key in (f"cart:{owner_id}", "product:mug", "product:pen"):  # what is stored now is JSON
        assert store.get(KEY_PREFIX + key).startswith(b"{"), key
    store.close()


def test_the_shared_flask_caching_cache_stays_in_the_worker_with_redis_set(cached_app):
    """The catalog micro-cache and the listing counts (app.extensions.cache) pickle their values:
    they must never live in Redis, where another writer could put a pickle of its own."""
    from flask_caching.backends import NullCache, SimpleCache

    from app.extensions import cache

    assert cached_app.config["CACHE_TYPE"] in ("SimpleCache", "NullCache")
    with cached_app.app_context():
        assert type(cache.cache) in (SimpleCache, NullCache)


def test_lookups_are_counted_as_hits_and_misses(cached, shopper):
    add(cached, shopper, "mug", 1)
    counts = Counts()
    for _ in range(3):
        cached.get("/v1/cart", headers=shopper)

    assert counts.delta("storefront_cart_cache_total", result="miss") == 1
    assert counts.delta("storefront_cart_cache_total", result="hit") == 2
