"""Wires the accounts module into the app being built; called by the composition root only."""

from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import with_appcontext

from app.accounts import consumers, database, interface, passwords
from app.accounts.mail import build_mailer
from app.accounts.revocation import build_store
from app.accounts.service import Accounts
from app.accounts.sessions import Sessions
from app.config import Settings


def register(app: Flask, settings: Settings) -> None:
    database.translate_database_errors.start(app)
    passwords.configure(settings.auth.password_hash_time_cost, settings.auth.password_hash_memory_kib)
    limits = settings.resilience
    revocations = build_store(
        settings.redis_url,
        timeout=limits.redis_timeout,
        breaker_failures=limits.breaker_failures,
        breaker_reset_seconds=limits.breaker_reset_seconds,
    )
    sessions = Sessions(settings.auth, revocations)
    app.extensions["accounts"] = Accounts(
        settings.auth, sessions, build_mailer(settings.mail, development=settings.env == "development")
    )
    consumers.register_consumers(app)  # the emails that follow events
    app.cli.add_command(create_admin_command)


@click.command("create-admin")
@with_appcontext
@click.option("--email", required=True, help="The administrator's email (verified by definition).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
def create_admin_command(email: str, password_stdin: bool) -> None:
    """Create the first administrator, or promote an existing account."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = interface.create_admin(email=email, password=password)
    except interface.WeakPassword as error:
        raise click.ClickException("; ".join(error.errors["password"])) from None
    click.echo(f"Administrator {user.email} ({user.user_id}) is ready.")
