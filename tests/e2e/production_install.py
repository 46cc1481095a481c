"""The production install, built as the Dockerfile builds it, outside the checkout.

`production_install()` yields a fresh virtualenv holding `pip install -c requirements.lock -e .`
(no extras) and, at a fixed path next to it, the files the Dockerfile's COPY lines put in the
image, taken from a clean copy of the tree (tracked files and untracked files git does not
ignore: the tree as it will be committed). The virtualenv is cached, keyed by the hash of what
the install is made of (requirements.lock, the parts of pyproject.toml an install with no extras
reads, the Python version), in `$STOREFRONT_PROD_VENV_CACHE` (default
`~/.cache/storefront-prod-venv/<hash>/`); the source copy is laid anew on every use, at the same
path, because the editable install points at it.
A file lock keeps two test runs from sharing the directory at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ProductionInstall:
    venv: Path
    source: Path  # the image's WORKDIR: what the Dockerfile copies, nothing else
    built: bool  # False when the cached virtualenv was reused

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def installed(self) -> dict[str, str]:
        """Every distribution in the virtualenv but the editable project (and pip's own), as
        {normalised name: version}."""
        frozen = subprocess.run(
            [self.bin / "python", "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return dict(parse_pin(line) for line in frozen.splitlines() if line.strip())


def parse_pin(line: str) -> tuple[str, str]:
    name, _, version = line.strip().partition("==")
    return re.sub(r"[-_.]+", "-", name).lower(), version


def cache_root() -> Path:
    configured = os.environ.get("STOREFRONT_PROD_VENV_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "storefront-prod-venv"


def cache_key() -> str:
    digest = hashlib.sha256()
    digest.update((REPO / "requirements.lock").read_bytes())
    install_settings = what_the_install_reads(tomllib.loads((REPO / "pyproject.toml").read_text()))
    digest.update(json.dumps(install_settings, sort_keys=True, default=str).encode())
    digest.update(f"python {sys.version_info[0]}.{sys.version_info[1]}".encode())
    return digest.hexdigest()[:16]


def what_the_install_reads(pyproject: dict) -> dict:
    """The tables of pyproject.toml that `pip install -c requirements.lock -e .` builds from: the
    build system, the project but for its extras (the image installs none) and setuptools' own.
    A change to another tool's settings, or to an extra, leaves the install as it was."""
    return {
        "build-system": pyproject.get("build-system"),
        "project": {key: value for key, value in pyproject["project"].items() if key != "optional-dependencies"},
        "setuptools": pyproject.get("tool", {}).get("setuptools"),
    }


def clean_tree_files() -> list[str]:
    """The tree as it will be committed: tracked files plus untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return sorted(path for path in set(listed.split("\0")) if path and (REPO / path).is_file())


def dockerfile_copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY instruction, relative to the build context and WORKDIR."""
    copies = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            *sources, destination = (word for word in words[1:] if not word.startswith("--"))
            copies.append((sources, destination))
    return copies


def image_files(files: list[str], dockerfile: str) -> dict[str, str]:
    """{path in the image's WORKDIR: path in the tree} for what the Dockerfile copies."""
    placed = {}
    for sources, destination in dockerfile_copies(dockerfile):
        into_directory = destination.endswith("/") or len(sources) > 1
        target = PurePosixPath(destination)
        for source in sources:
            source = source.rstrip("/")
            if source in files:
                placed[str(target / PurePosixPath(source).name if into_directory else target)] = source
                continue
            members = [path for path in files if path.startswith(f"{source}/")]
            if not members:
                raise AssertionError(f"the Dockerfile copies {source}, which is not in the tree")
            for path in members:
                placed[str(target / PurePosixPath(path).relative_to(source))] = path
    return placed


def _lay_source(source: Path) -> None:
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    for target, origin in image_files(clean_tree_files(), (REPO / "Dockerfile").read_text()).items():
        (source / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / origin, source / target)


def _install(venv: Path, source: Path, log: Path) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    environment = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    with log.open("w") as output:
        for command in (
            [sys.executable, "-m", "venv", str(venv)],
            # The Dockerfile's RUN line, word for word.
            [str(venv / "bin" / "pip"), "install", "-c", "requirements.lock", "-e", "."],
        ):
            done = subprocess.run(
                command, cwd=source, env=environment, stdout=output, stderr=subprocess.STDOUT, timeout=900, check=False
            )
            if done.returncode != 0:
                raise AssertionError(f"{' '.join(command)} failed ({done.returncode}): {log.read_text()[-4000:]}")


def _prune_stale(current: Path, days: int = 14) -> None:
    """Removes the installs of other lock files unused for `days` (each use touches its lock file)."""
    for other in current.parent.iterdir():
        lock_path = other / "lock"
        if other == current or not lock_path.exists() or time.time() - lock_path.stat().st_mtime < days * 86400:
            continue
        with lock_path.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use
            shutil.rmtree(other, ignore_errors=True)


@contextmanager
def production_install() -> Iterator[ProductionInstall]:
    """The cached install, held (under an exclusive file lock) for as long as the caller uses it."""
    root = cache_root() / cache_key()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.utime(root / "lock")  # used now: see _prune_stale
        _prune_stale(root)
        venv, source, complete = root / "venv", root / "storefront", root / "venv" / ".complete"
        _lay_source(source)
        built = not (complete.exists() and (venv / "bin" / "python").exists())
        if built:
            _install(venv, source, root / "install.log")
            _lay_source(source)  # drop what the build left in the tree (storefront.egg-info)
            complete.touch()
        yield ProductionInstall(venv=venv, source=source, built=built)
