"""Wires the cart module into the app being built; called by the composition root only."""

from flask import Flask

from app.cart.service import Carts
from app.config import Settings


def register(app: Flask, settings: Settings) -> None:
    app.extensions["carts"] = Carts(reservation_ttl=settings.cart_reservation_ttl)
