"""nx-27017 for the tests: a MongoDB wire-protocol server in Python (the `nx-27017` package, on
SQLite), started on a free port of 127.0.0.1, its data in memory or, `persistent`, in a folder.

tests/conftest.py starts one per session unless MONGODB_URI names a real MongoDB. Where it
answers differently from MongoDB, app/products/mongo_dialect.py works around it and
tests/integration/test_store_operators.py (its `test_gap_*` tests) pins the difference.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MongoServer:
    """One nx-27017 process; `stop()` and `start()` again to simulate an outage."""

    workdir: Path
    port: int
    persistent: bool = False  # keep the data on disk across stop() and start()
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/storefront_test"

    def start(self, timeout: float = 15.0) -> None:
        executable = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or "nx-27017"
        self.process = subprocess.Popen(
            [
                executable,
                *(("--data-dir", str(self.workdir / "data")) if self.persistent else ("--db", "memory")),
                "--port",
                str(self.port),
                "--log-file",
                str(self.workdir / "nx.log"),
                "--pid-file",
                str(self.workdir / "nx.pid"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.process.returncode}; see {self.workdir / 'nx.log'}")
            try:
                MongoClient(self.uri, serverSelectionTimeoutMS=200).admin.command("ping")
                return
            except PyMongoError:
                time.sleep(0.1)
        raise RuntimeError(f"nx-27017 did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
