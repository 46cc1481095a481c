"""Runs a command (scripts/mutation.sh: `mutmut run`) with SLOTS prepared store slots named in
TEST_STORE_SLOTS (tests/store_slots.py says why): one nx-27017 with a Mongo database per slot,
and a migrated PostgreSQL database per slot, dropped when the command ends.

Usage: python scripts/mutation_stores.py SLOTS COMMAND [ARGUMENTS...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from flask_migrate import upgrade

from app import create_app
from app.config import load_settings
from app.extensions import db
from tests.conftest import TEST_SECRET, scratch_database
from tests.mongo_server import MongoServer, free_port
from tests.store_slots import SLOTS_ENV, StoreSlot, write_slots


def main(slots: int, command: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="storefront-mutation-") as workdir, ExitStack() as stack:
        mongo = MongoServer(Path(workdir), free_port())
        mongo.start()
        stack.callback(mongo.stop)
        prepared = []
        for index in range(slots):
            name = stack.enter_context(scratch_database(f"storefront_mutation_{os.getpid()}_{index}"))
            slot = StoreSlot(
                database_url=f"postgresql://postgres@127.0.0.1:5432/{name}",
                mongo_uri=mongo.uri.rsplit("/", 1)[0] + f"/storefront_mutation_{index}",
            )
            migrate(slot)
            prepared.append(slot)
        path = Path(workdir) / "slots.json"
        write_slots(path, prepared)
        return subprocess.run(command, env={**os.environ, SLOTS_ENV: str(path)}, check=False).returncode  # noqa: S603


def migrate(slot: StoreSlot) -> None:
    """The migrations, as `flask db upgrade` runs them, on the slot's database."""
    environment = {
        "APP_ENV": "test",
        "MONGODB_URI": slot.mongo_uri,
        "DATABASE_URL": slot.database_url,
        "JWT_SECRET": TEST_SECRET,
    }
    app = create_app(load_settings(environment))
    with app.app_context():
        upgrade()
        db.engine.dispose()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2:]))
