"""Prepared stores for scripts/mutation.sh, which runs thousands of short test sessions, a few
at a time.

Making a PostgreSQL database, migrating it, starting nx-27017 and dropping it all again costs
a session about 1.5 s on these machines, more than the tests of most mutants. So
scripts/mutation_stores.py prepares one slot per parallel session (a migrated database and a
Mongo database on one shared nx-27017) and names them in TEST_STORE_SLOTS; a session takes a
free slot and holds it, with a file lock, until it ends. A slot's data is whatever the last
session left: the autouse `clean_stores` empties it before each test, as it does otherwise.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

SLOTS_ENV = "TEST_STORE_SLOTS"  # the path of the slots' JSON file


@dataclass(frozen=True)
class StoreSlot:
    database_url: str
    mongo_uri: str


def write_slots(path: Path, slots: list[StoreSlot]) -> None:
    path.write_text(json.dumps([asdict(slot) for slot in slots]))


@contextmanager
def taken_slot() -> Iterator[StoreSlot | None]:
    """A free prepared slot, held until the block ends; None when no slots are prepared."""
    path = os.environ.get(SLOTS_ENV)
    if not path:
        yield None
        return
    slots = [StoreSlot(**slot) for slot in json.loads(Path(path).read_text())]
    for index, slot in enumerate(slots):
        with open(f"{path}.{index}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another session holds it
            yield slot  # the lock goes with the file: at the end of the block, or of the process
            return
    raise RuntimeError(f"all {len(slots)} prepared store slots ({path}) are taken")
