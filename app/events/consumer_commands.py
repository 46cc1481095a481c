"""`flask events consume` and `flask events dlq list|show|replay` (added to `flask events`)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from app.events.amqp import ConsumerRunner, DeadLetter, DeadLetters, dead_letter_queue_name
from app.events.consumers import Consumer, registered
from app.heartbeat import beat
from app.heartbeat import option as heartbeat_option

# A beat is due every ConsumerRunner.beat_seconds (10 s); a handler's retry pause lasts up to 30 s.
HEARTBEAT_DUE_SECONDS = 60


def _rabbitmq_url() -> str:
    url = current_app.extensions["settings"].rabbitmq_url
    if not url:
        raise click.ClickException(
            "RABBITMQ_URL is not set: without RabbitMQ the relay hands each event to the consumers in process"
        )
    return url


def _chosen(names: tuple[str, ...]) -> list[Consumer]:
    consumers = registered()
    unknown = sorted(set(names) - set(consumers))
    if unknown:
        raise click.BadParameter(
            f"no consumer named {', '.join(unknown)}; there are: {', '.join(sorted(consumers))}", param_hint="NAME"
        )
    return [consumers[name] for name in (names or sorted(consumers))]


@click.command("consume")
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Run this consumer only (repeat for several); all registered consumers by default.",
)
@heartbeat_option("While connected and consuming, every 10 s (it lapses while RabbitMQ is away)")
@with_appcontext
def consume_command(only: tuple[str, ...], heartbeat: Path | None) -> None:
    """Deliver the events queued in RabbitMQ to the consumers until SIGTERM or Ctrl-C (which
    stop it once the message at hand is done; unacked ones go back to their queue)."""
    url = _rabbitmq_url()
    consumers = _chosen(only)
    settings = current_app.extensions["settings"]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    click.echo(f"consuming for {', '.join(consumer.name for consumer in consumers)}")
    runner = ConsumerRunner(current_app._get_current_object(), url, consumers, settings.events_max_attempts)
    if heartbeat is not None:
        runner.on_beat = lambda: beat(heartbeat, HEARTBEAT_DUE_SECONDS)
    runner.run(stopping)
    click.echo("stopped")


dlq_cli = AppGroup("dlq", help="Dead letters: events a consumer failed on EVENTS_MAX_ATTEMPTS times.")
consumer_option = click.option(
    "--consumer", "consumer", metavar="NAME", default=None, help="Only this consumer's dead-letter queue."
)


def _dead_letters(consumer: str | None) -> DeadLetters:
    return DeadLetters(_rabbitmq_url(), _chosen((consumer,) if consumer else ()))


def _line(letter: DeadLetter) -> str:
    error = letter.error.splitlines()[0] if letter.error else ""
    return (
        f"{letter.message_id}  {letter.consumer}  {letter.routing_key}  attempts={letter.attempts}  "
        f"failed_at={letter.failed_at}  {error}"
    )


@dlq_cli.command("list")
@consumer_option
def dlq_list(consumer: str | None) -> None:
    """One line per dead letter: message id, consumer, event type, attempts, when, the error."""
    letters = _dead_letters(consumer).list()
    for letter in letters:
        click.echo(_line(letter))
    click.echo(f"{len(letters)} dead letters")


@dlq_cli.command("show")
@click.argument("message_id")
@consumer_option
def dlq_show(message_id: str, consumer: str | None) -> None:
    """The dead letter(s) with this message id (the event id): the error, headers and event."""
    letters = _dead_letters(consumer).find(message_id)
    if not letters:
        raise click.ClickException(f"no dead letter with message id {message_id}")
    for letter in letters:
        click.echo(json.dumps(letter.as_json(), indent=2, default=str))


@dlq_cli.command("replay")
@click.argument("message_id", required=False)
@consumer_option
def dlq_replay(message_id: str | None, consumer: str | None) -> None:
    """Send dead letters (all, or the one with MESSAGE_ID) back to their consumer's own queue
    (only that consumer gets them again), removing them from the dead-letter queue."""
    replayed = _dead_letters(consumer).replay(message_id)
    if message_id is not None and not replayed:
        raise click.ClickException(f"no dead letter with message id {message_id}")
    for letter in replayed:
        click.echo(
            f"replayed {letter.message_id} to {letter.consumer} (from {dead_letter_queue_name(letter.consumer)})"
        )
    click.echo(f"{len(replayed)} replayed")


def add_to(group: click.Group) -> None:
    """Give `flask events` (app/events/cli.py) these commands."""
    group.add_command(consume_command)
    group.add_command(dlq_cli)
