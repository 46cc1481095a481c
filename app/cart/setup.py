"""Wires the cart module into the app being built; called by the composition root only."""

import click
from flask import Flask
from flask.cli import AppGroup

from app.cart.cache import CartCache
from app.cart.service import Carts
from app.cart.sweep import sweep
from app.config import Settings


def register(app: Flask, settings: Settings) -> None:
    app.extensions["carts"] = Carts(
        reservation_ttl=settings.cart_reservation_ttl,
        guest_cart_days=settings.guest_cart_days,
        user_cart_days=settings.user_cart_days,
        cache=CartCache.build(settings.redis_url, settings.cart_cache_ttl, settings.resilience.redis_timeout),
    )
    carts_cli = AppGroup("carts", help="Cart maintenance jobs.")

    @carts_cli.command("sweep")
    def sweep_command() -> None:
        """Release stock holds that expired and expire abandoned carts (safe while serving)."""
        report = sweep()
        click.echo(
            f"released {report.lines_released} expired lines from {report.carts_swept} carts; "
            f"expired {report.carts_expired} abandoned carts"
        )

    app.cli.add_command(carts_cli)
