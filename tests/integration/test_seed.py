"""`flask seed`: idempotent, sized by --count, --reset guarded by a confirmation."""

import subprocess
import sys
from pathlib import Path

from app.products import interface as products

REPO = Path(__file__).resolve().parents[2]


def catalog_size(app) -> int:
    with app.app_context():
        return products.list_products(page_size=1).total


def test_seeds_the_original_hundred_products_with_real_data(app, runner):
    result = runner.invoke(args=["seed"])
    assert result.exit_code == 0, result.output
    assert "Inserted 100 products" in result.output
    assert catalog_size(app) == 100
    with app.app_context():
        first, last = products.get_products(product_ids=["1", "100"])
    assert (first.name, first.sku, first.category) == ("Lightweight White Hoodie", "CLO-0000001", "clothing")
    assert first.price > 0
    assert last.product_id == "100"


def test_seeding_again_adds_only_what_is_missing(app, runner):
    runner.invoke(args=["seed", "--count", "30"])
    with app.app_context():
        products.archive_product(product_id="5")
    result = runner.invoke(args=["seed", "--count", "50"])
    assert "Inserted 20 products" in result.output
    with app.app_context():
        assert products.get_product(product_id="5").status == "archived"
    assert catalog_size(app) == 49
    assert "Inserted 0 products" in runner.invoke(args=["seed", "--count", "50"]).output  # nothing missing now


def test_reset_asks_first_and_keeps_data_when_refused(app, runner):
    runner.invoke(args=["seed", "--count", "10"])
    refused = runner.invoke(args=["seed", "--count", "3", "--reset"], input="n\n")
    assert refused.exit_code == 1
    assert "Aborted" in refused.output
    assert catalog_size(app) == 10


def test_reset_with_yes_wipes_then_seeds(app, runner):
    runner.invoke(args=["seed", "--count", "10"])
    result = runner.invoke(args=["seed", "--count", "3", "--reset", "--yes"])
    assert result.exit_code == 0
    assert "Deleted 10 products" in result.output
    assert catalog_size(app) == 3


def test_count_must_be_positive(runner):
    result = runner.invoke(args=["seed", "--count", "0"])
    assert result.exit_code == 2
    assert "--count" in result.output


def test_python_seed_py_works_too(app, settings):
    environment = {"PATH": "/usr/bin:/bin", "MONGODB_URI": settings.mongodb_uri, "JWT_SECRET": settings.jwt_secret}
    result = subprocess.run(
        [sys.executable, "seed.py", "--count", "7"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Inserted 7 products" in result.stdout
    assert catalog_size(app) == 7
