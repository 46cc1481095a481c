"""Wires the products module into the app being built; called by the composition root only."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from app.config import Settings
from app.products import database, interface

inventory_cli = AppGroup("inventory", help="Inventory maintenance jobs.")


def register(app: Flask, settings: Settings) -> None:
    database.connect(settings.mongodb_uri)
    database.ensure_indexes()
    app.cli.add_command(inventory_cli)


@inventory_cli.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Report what would be fixed and change nothing.")
def reconcile_command(dry_run: bool) -> None:
    """Make every product's `reserved` match its active reservations (safe while serving)."""
    try:
        report = interface.reconcile_inventory(dry_run=dry_run)
    except interface.ProductsUnavailable as error:
        raise click.ClickException(error.detail) from None
    for fix in report.fixes:
        click.echo(f"product {fix.product_id}: reserved {fix.reserved_before} -> {fix.reserved_after}")
    for product_id in report.oversold:
        click.echo(f"product {product_id}: oversold, its active reservations hold more than its stock", err=True)
    for product_id in report.busy:
        click.echo(f"product {product_id}: busy, not checked; run again", err=True)
    fixed, recovered = ("would fix", "would recover") if dry_run else ("fixed", "recovered")
    click.echo(
        f"checked {report.products_checked} products, {fixed} {report.products_fixed}, "
        f"{recovered} {report.stale_steps_recovered} stale steps" + (" (dry run: nothing changed)" if dry_run else "")
    )
