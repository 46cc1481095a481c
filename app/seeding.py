"""Catalog seeding behind `flask seed` (also `python seed.py`, see seed.py at the root).

Deterministic: product N always gets the same name, SKU, category, price and stock, so
re-running only adds what is missing. Product ids are "1".."N" like the original system's.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal

import click
from flask.cli import with_appcontext

from app.products import interface as products

BATCH_SIZE = 5000
CATEGORIES = {
    "electronics": ("Headphones", "Speaker", "Charger", "Keyboard", "Mouse", "Webcam", "Monitor", "Router"),
    "home": ("Lamp", "Mug", "Blanket", "Vase", "Cushion", "Clock", "Kettle", "Shelf"),
    "clothing": ("T-Shirt", "Hoodie", "Jacket", "Scarf", "Cap", "Socks", "Jeans", "Sweater"),
    "sports": ("Yoga Mat", "Water Bottle", "Dumbbell", "Jump Rope", "Backpack", "Tent", "Helmet", "Ball"),
    "books": ("Notebook", "Cookbook", "Novel", "Atlas", "Journal", "Planner", "Sketchbook", "Guide"),
}
ADJECTIVES = ("Classic", "Compact", "Deluxe", "Eco", "Lightweight", "Modern", "Premium", "Rugged", "Smart", "Vintage")
COLOURS = ("Black", "White", "Blue", "Green", "Red", "Grey", "Oak", "Sand")


def draft_for(number: int) -> products.ProductDraft:
    rng = random.Random(number)
    category = rng.choice(sorted(CATEGORIES))
    noun = rng.choice(CATEGORIES[category])
    adjective, colour = rng.choice(ADJECTIVES), rng.choice(COLOURS)
    return products.ProductDraft(
        product_id=str(number),
        sku=f"{category[:3].upper()}-{number:07d}",
        name=f"{adjective} {colour} {noun}",
        description=f"A {adjective.lower()} {noun.lower()} in {colour.lower()}, from the {category} range.",
        category=category,
        tags=(adjective.lower(), colour.lower()),
        price=Decimal(rng.randint(199, 49999)) / 100,
        stock=rng.randint(0, 500),
    )


def batches(count: int) -> Iterator[list[products.ProductDraft]]:
    for start in range(1, count + 1, BATCH_SIZE):
        yield [draft_for(number) for number in range(start, min(start + BATCH_SIZE, count + 1))]


def seed(count: int, *, show_progress: bool = True) -> int:
    """Insert products "1".."count" that are missing; returns how many were inserted."""
    inserted = 0
    with click.progressbar(length=count, label="Seeding products", hidden=not show_progress) as bar:
        for batch in batches(count):
            existing = {
                product.product_id for product in products.get_products(product_ids=[d.product_id for d in batch])
            }
            inserted += products.import_products(drafts=[draft for draft in batch if draft.product_id not in existing])
            bar.update(len(batch))
    return inserted


@click.command("seed")
@with_appcontext
@click.option("--count", default=100, show_default=True, type=click.IntRange(1, 10_000_000), help="Products to have.")
@click.option("--reset", is_flag=True, help="Delete every product, reservation and stock movement first.")
@click.option("--yes", is_flag=True, help="Do not ask before --reset.")
def seed_command(count: int, reset: bool, yes: bool) -> None:
    """Seed the catalog with products "1".."COUNT" (idempotent)."""
    if reset:
        if not yes:
            click.confirm("Delete ALL products, reservations and stock movements?", abort=True)
        click.echo(f"Deleted {products.delete_all_products()} products.")
    inserted = seed(count, show_progress=count > BATCH_SIZE)
    click.echo(f"Inserted {inserted} products; {count - inserted} of 1..{count} were already there.")
