"""`flask events ...`: the commands that move events (the relay here; the consumers add theirs)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from app import metrics
from app.events import consumer_commands
from app.events.relay import BATCH, BrokerUnavailable, Relay
from app.heartbeat import beat
from app.heartbeat import option as heartbeat_option

HEARTBEAT_SLACK_SECONDS = 60  # beyond the interval: a pass with a full outbox, a slow broker
events_cli = AppGroup("events", help="Domain events: publish the outbox, run the consumers.")
consumer_commands.add_to(events_cli)  # consume, dlq list|show|replay


@events_cli.command("relay")
@click.option("--once", is_flag=True, help="Run one pass and exit (status 1 when it fails).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait between passes once the outbox is drained.",
)
@click.option("--batch", type=click.IntRange(min=1), default=BATCH, show_default=True, help="Events claimed per pass.")
@heartbeat_option("After each pass that succeeded (it lapses while RabbitMQ is down)")
def relay_command(once: bool, interval: float, batch: int, heartbeat: Path | None) -> None:
    """Publish the outbox to RabbitMQ (RABBITMQ_URL), or hand it to the in-process consumers
    without it, until SIGTERM or Ctrl-C (which stop it between passes)."""
    settings = current_app.extensions["settings"]
    relay = Relay(settings, batch=batch)
    if once:
        try:
            click.echo(f"{relay.run_pass()} events published")
        except BrokerUnavailable as error:
            raise click.ClickException(str(error)) from None
        finally:
            relay.close()
        return
    metrics.serve(settings)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # a failed pass is logged once, by the relay
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    if heartbeat is None:
        relay.run(stopping, interval)
    else:
        relay.run(stopping, interval, after_pass=lambda: beat(heartbeat, 2 * interval + HEARTBEAT_SLACK_SECONDS))
