"""Wires the cart module into the app being built; called by the composition root only."""

import logging
import signal
import threading
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from app.cart import consumers, database
from app.cart.cache import CartCache
from app.cart.service import Carts
from app.cart.store import Limits
from app.cart.sweep import sweep
from app.config import Settings
from app.heartbeat import beat
from app.heartbeat import option as heartbeat_option

logger = logging.getLogger(__name__)
HEARTBEAT_SLACK_SECONDS = 30


def register(app: Flask, settings: Settings) -> None:
    database.translate_database_errors.start(app)
    app.extensions["carts"] = Carts(
        reservation_ttl=settings.cart_reservation_ttl,
        guest_cart_days=settings.guest_cart_days,
        user_cart_days=settings.user_cart_days,
        cache=CartCache.build(settings.redis_url, settings.cart_cache_ttl, settings.resilience.redis_timeout),
        limits=Limits(max_lines=settings.cart_max_lines, max_units=settings.cart_max_units),
    )
    consumers.register_consumers(app)  # order.placed: the order becomes confirmed
    carts_cli = AppGroup("carts", help="Cart maintenance jobs.")

    @carts_cli.command("sweep")
    @click.option(
        "--every",
        type=click.IntRange(min=1),
        default=None,
        metavar="SECONDS",
        help="Sweep again every SECONDS until stopped (SIGTERM or Ctrl-C ends it after the current sweep).",
    )
    @heartbeat_option("With --every: after each sweep")
    def sweep_command(every: int | None, heartbeat: Path | None) -> None:
        """Release stock holds that expired and expire abandoned carts (safe while serving)."""
        if every is None:
            _sweep_once()
            return
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        while not stopping.is_set():
            try:
                _sweep_once()
            except Exception:  # a store outage: log it, and try again at the next round
                logger.exception("cart sweep failed; trying again in %s s", every)
            else:
                if heartbeat is not None:
                    beat(heartbeat, 2 * every + HEARTBEAT_SLACK_SECONDS)
            stopping.wait(every)

    def _sweep_once() -> None:
        report = sweep()
        click.echo(
            f"released {report.lines_released} expired lines from {report.carts_swept} carts; "
            f"expired {report.carts_expired} abandoned carts; forgot {report.keys_forgotten} expired idempotency keys"
        )

    app.cli.add_command(carts_cli)
