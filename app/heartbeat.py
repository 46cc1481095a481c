"""Heartbeat files of the long-running commands (the cart sweeper, the relay, the consumers):
each beat writes the time by which the next one is due, and the container's health check
(`scripts/healthcheck.py --heartbeat FILE`) fails once that time has passed."""

from __future__ import annotations

import time
from pathlib import Path

import click


def option(when: str):
    """The commands' `--heartbeat FILE` option; `when` says when the command beats."""
    return click.option(
        "--heartbeat",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"{when}, write the time by which the next beat is due to this file "
        "(`scripts/healthcheck.py --heartbeat FILE` checks it).",
    )


def beat(path: Path, due_in: float) -> None:
    path.write_text(f"{time.time() + due_in:.0f}\n")
