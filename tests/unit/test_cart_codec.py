"""The cart cache's JSON codec: what goes into Redis comes back exactly, and nothing else does."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from app.cart import codec
from app.cart.cache import CartEntry
from app.cart.dto import Cart, CartItem
from app.products.interface import Product

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_decoders():
    """Each test builds the decoders it uses (they are cached per type): a test run in a
    process that built them before (as mutmut's runs are) still checks the code it names."""
    codec._decoder.cache_clear()


def a_product(**changes) -> Product:
    fields = {
        "product_id": "mug",
        "sku": "SKU-MUG",
        "name": "Mug ☕ «grand»",
        "description": 'Says "hi"\n\\',
        "category": "kitchen",
        "tags": ("blue", "ceramic"),
        "price": Decimal("4.00"),
        "currency": "USD",
        "stock": 10,
        "reserved": 3,
        "status": "active",
        "created_at": CREATED,
        "updated_at": CREATED + timedelta(microseconds=1),
        "version": 7,
    }
    return Product(**{**fields, **changes})


def a_cart() -> Cart:
    lines = (
        CartItem(
            "mug", "SKU-MUG", "Mug", Decimal("4.00"), 2, Decimal("8.00"), 7, Decimal("4.50"), True, CREATED, False
        ),
        CartItem(
            "pen",
            "SKU-PEN",
            "Pen",
            Decimal("1E+2"),
            1,
            Decimal("100"),
            None,  # the products store could not be reached
            None,
            False,
            datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
            True,
        ),
    )
    return Cart("cart-1", "user-1", "USD", Decimal("108.00"), 3, lines, 12)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (Product, a_product()),
        (Product, a_product(tags=(), price=Decimal("-0.10"), created_at=datetime(2026, 1, 2))),  # naive stays naive
        (Cart, a_cart()),
        (Cart, Cart("cart-2", "guest", "EUR", Decimal("0"), 0, (), 1)),
        (CartEntry, CartEntry("9f0c", a_cart())),
    ],
)
def test_the_cached_dtos_round_trip_exactly(kind, value):
    stored = codec.dumps(value)
    json.loads(stored)  # plain JSON
    back = codec.loads(kind, stored)
    assert back == value
    assert repr(back) == repr(value)  # Decimal exponents ("4.00", "1E+2"), offsets and microseconds kept
    assert hash(back) == hash(value)  # the cart render memo keys on the DTO


def test_the_stored_form_is_compact_utf8():
    """Less to send to Redis and keep there: no spaces, characters as UTF-8 rather than escapes."""
    stored = codec.dumps(a_product())
    assert stored == json.dumps(json.loads(stored), separators=(",", ":"), ensure_ascii=False).encode()
    assert "Mug ☕ «grand»".encode() in stored


def test_money_and_times_are_stored_as_strings():
    stored = json.loads(codec.dumps(a_product()))
    assert stored["price"] == "4.00"
    assert stored["tags"] == ["blue", "ceramic"]
    assert stored["created_at"] == "2026-01-02T03:04:05.678901+00:00"


class Boom:
    def __reduce__(self):
        return (pytest.fail, ("unpickled",))


@pytest.mark.parametrize(
    "stored",
    [
        pickle.dumps(Boom()),
        b"!" + pickle.dumps(Boom()),  # flask-caching's RedisCache format
        b"not json",
        b"null",
        b"[]",
        json.dumps({**json.loads(codec.dumps(a_product())), "stock": True}).encode(),  # a bool is not a count
        json.dumps({**json.loads(codec.dumps(a_product())), "price": 4.0}).encode(),  # money is never a float
        json.dumps({**json.loads(codec.dumps(a_product())), "price": "four"}).encode(),
        json.dumps({**json.loads(codec.dumps(a_product())), "created_at": "yesterday"}).encode(),
        json.dumps({**json.loads(codec.dumps(a_product())), "extra": 1}).encode(),
        json.dumps({k: v for k, v in json.loads(codec.dumps(a_product())).items() if k != "sku"}).encode(),
        json.dumps({**json.loads(codec.dumps(a_product())), "tags": "blue"}).encode(),
    ],
)
def test_anything_else_is_refused_without_being_run(stored):
    with pytest.raises(codec.DecodeError):
        codec.loads(Product, stored)


def test_a_cart_with_a_malformed_line_is_refused():
    stored = json.loads(codec.dumps(a_cart()))
    stored["items"][1]["available"] = "7"
    with pytest.raises(codec.DecodeError):
        codec.loads(Cart, json.dumps(stored))


def test_only_the_known_types_are_stored():
    with pytest.raises(TypeError) as refused:
        codec.dumps(CartEntry("g", {"not": "a cart"}))  # a dict is no field type of the DTOs
    assert str(refused.value) == "the cart cache cannot store a dict"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"stock": True}, "expected int, got True"),
        ({"price": 4.0}, "expected str, got 4.0"),
        ({"created_at": None}, "expected str, got None"),
        ({"stock": "x" * 60}, "expected int, got '" + "x" * 39),  # at most 40 characters of the value
        ({"tags": "blue"}, "expected an array, got 'blue'"),
        ({"extra": 1}, "expected the fields of Product"),
    ],
)
def test_a_refusal_says_what_was_expected_and_what_was_found(changes, reason):
    """The reason goes into the log line of the cache entry that was ignored (cache.py)."""
    stored = json.dumps({**json.loads(codec.dumps(a_product())), **changes})
    with pytest.raises(codec.DecodeError) as refused:
        codec.loads(Product, stored)
    assert str(refused.value) == reason


def test_bytes_that_are_no_json_are_refused_saying_why():
    with pytest.raises(codec.DecodeError) as refused:
        codec.loads(Product, b"not json")
    assert str(refused.value) == "not a Product: Expecting value: line 1 column 1 (char 0)"
