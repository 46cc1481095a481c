"""`flask inventory reconcile`: holds without a cart line are released, then every product's
`reserved` and `available` are made to match its holds (app/products/reconcile.py).

A hold is made before its cart line is written (app/cart/service.py), so a process that dies
in between leaves a hold no line knows. It would lapse by itself, but until then its units are
off sale; this job finds such holds by asking the cart module which ones a line still has.
Holds younger than ORPHAN_GRACE are left alone: their line may be being written right now.
It needs the products and cart modules, in process or over HTTP; where the cart module is not
reachable (a products-only service) only the counters are reconciled.
"""

from __future__ import annotations

from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup

from app import clock
from app.cart import interface as cart
from app.products import interface as products

ORPHAN_GRACE = timedelta(minutes=5)
PAGE_SIZE = 500

inventory_cli = AppGroup("inventory", help="Inventory maintenance jobs.")


def orphan_holds(*, dry_run: bool) -> list[products.StockReservation]:
    """Active holds older than ORPHAN_GRACE that no active cart's line has; released unless `dry_run`."""
    made_before = clock.now() - ORPHAN_GRACE
    orphans: list[products.StockReservation] = []
    after = None
    while page := products.list_active_reservations(created_before=made_before, after=after, limit=PAGE_SIZE):
        held = set(cart.held_reservations(reservation_ids=[hold.reservation_id for hold in page]))
        for hold in page:
            if hold.reservation_id not in held:
                orphans.append(hold)
                if not dry_run:
                    products.release_reservation(
                        product_id=hold.product_id, reservation_id=hold.reservation_id, held=hold.quantity
                    )
        after = page[-1].reservation_id
    return orphans


def _reaches_cart() -> bool:
    settings = current_app.extensions["settings"]
    return settings.serves("cart") or "cart" in settings.remote_modules()


@inventory_cli.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Report what would be fixed and change nothing.")
def reconcile_command(dry_run: bool) -> None:
    """Release holds no cart line has, then make every product's counters match its holds
    (safe while serving)."""
    try:
        orphans = orphan_holds(dry_run=dry_run) if _reaches_cart() else None
        report = products.reconcile_inventory(dry_run=dry_run)
    except (products.ProductsUnavailable, cart.CartUnavailable) as error:
        raise click.ClickException(error.detail) from None
    released = "would release" if dry_run else "released"
    if orphans is None:
        click.echo("cart module not reachable from this process: holds without a cart line not checked", err=True)
    else:
        for hold in orphans:
            click.echo(f"hold {hold.reservation_id}: {hold.quantity} of product {hold.product_id}, no cart line")
        click.echo(f"{released} {len(orphans)} holds without a cart line")
    for fix in report.fixes:
        click.echo(f"product {fix.product_id}: reserved {fix.reserved_before} -> {fix.reserved_after}")
    for product_id in report.oversold:
        click.echo(f"product {product_id}: oversold, its holds hold more than its stock", err=True)
    for product_id in report.busy:
        click.echo(f"product {product_id}: busy, not checked; run again", err=True)
    fixed = "would fix" if dry_run else "fixed"
    click.echo(
        f"checked {report.products_checked} products, {fixed} {report.products_fixed}"
        + (" (dry run: nothing changed)" if dry_run else "")
    )
