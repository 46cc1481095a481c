"""The long-running commands' heartbeat files (app/heartbeat.py), as scripts/healthcheck.py reads them."""

import subprocess
import sys
import time
from pathlib import Path

import click
from click.testing import CliRunner

from app.heartbeat import beat, option

HEALTHCHECK = Path(__file__).resolve().parents[2] / "scripts" / "healthcheck.py"


def test_a_beat_writes_when_the_next_one_is_due_and_the_health_check_reads_it(tmp_path):
    file = tmp_path / "beat"
    beat(file, 30)
    assert abs(int(file.read_text()) - (time.time() + 30)) <= 1
    fresh = subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--heartbeat", str(file)], capture_output=True, timeout=30
    )

    beat(file, -5)  # a beat that was due 5 s ago: the command stopped beating
    stale = subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--heartbeat", str(file)], capture_output=True, timeout=30
    )

    assert (fresh.returncode, stale.returncode) == (0, 1)


def test_the_option_takes_a_file_path_and_says_when_the_command_beats(tmp_path):
    @click.command()
    @option("After each round")
    def command(heartbeat: Path | None) -> None:
        click.echo(repr(heartbeat))

    runner = CliRunner()
    assert runner.invoke(command, ["--heartbeat", str(tmp_path / "beat")]).output.strip() == repr(tmp_path / "beat")
    assert runner.invoke(command, []).output.strip() == "None"
    assert "After each round, write the time by which the next beat is due" in " ".join(
        runner.invoke(command, ["--help"]).output.split()
    )
