"""Domain errors carry typed attributes; the problem document is built from them (app/errors.py)."""

import pytest

from app.cart.errors import CurrencyMismatch
from app.errors import DomainError
from app.products.errors import InsufficientStock, ReservationConflict


def test_declared_attributes_are_the_problem_members_by_their_camel_case_names():
    error = CurrencyMismatch("One currency a cart.", product_id="p1", cart_currency="USD", product_currency="EUR")

    assert (error.product_id, error.cart_currency, error.product_currency) == ("p1", "USD", "EUR")
    assert error.problem_members() == {"productId": "p1", "cartCurrency": "USD", "productCurrency": "EUR"}


def test_an_attribute_not_given_is_none_and_not_a_member():
    error = ReservationConflict("In use.", reservation_id="r1")

    assert error.reservation_status is None
    assert error.problem_members() == {"reservationId": "r1"}


def test_an_undeclared_attribute_is_refused():
    with pytest.raises(TypeError, match="InsufficientStock declares no productid"):
        InsufficientStock("Only 1.", productid="p1")


def test_from_its_problem_members_the_same_error_again_unknown_members_left_out():
    sent = InsufficientStock("Only 1.", headers={"Retry-After": "1"}, product_id="p1", available=1, requested=5)
    document = {"type": "urn:x", "status": 409, "code": "insufficient_stock", **sent.problem_members()}

    again = InsufficientStock.from_problem(sent.detail, document, sent.headers)

    assert (type(again), again.detail, again.headers) == (InsufficientStock, "Only 1.", {"Retry-After": "1"})
    assert (again.product_id, again.available, again.requested) == ("p1", 1, 5)


def test_the_base_declares_nothing():
    assert DomainError("x").problem_members() == {}
