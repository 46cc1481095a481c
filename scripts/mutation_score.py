"""The mutation score of the last `mutmut run` (scripts/mutation.sh), from `mutmut results`.

Score = killed (a test failed, or the mutant ran out of time) / every mutant checked, less the
ones `tests/mutation_equivalents.txt` lists as equivalent (no test could tell them from the
original: each line is a mutant name, then `#` and why). A mutant no selected test reaches
("no tests") counts as not killed, and so does one `tests/mutation_survivors.txt` lists (a
known survivor, with why no test kills it yet). Prints the counts, the score, the survivors
by file and the name of every survivor listed in neither file (`mutmut show <name>` shows one).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

EQUIVALENTS = Path("tests/mutation_equivalents.txt")  # run from the checkout's root, as mutmut is
KNOWN_SURVIVORS = Path("tests/mutation_survivors.txt")
KILLED = {"killed", "timeout"}
UNCHECKED = {"not checked", "skipped", "check was interrupted by user"}


def main() -> int:
    listed = subprocess.run(  # noqa: S603 (mutmut beside this Python)
        [str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    statuses = dict(line.strip().rsplit(": ", 1) for line in listed.splitlines() if ": " in line)
    equivalent, known = names_in(EQUIVALENTS), names_in(KNOWN_SURVIVORS)
    counts = Counter(statuses.values())
    checked = {name: status for name, status in statuses.items() if status not in UNCHECKED}
    judged = {name: status for name, status in checked.items() if name not in equivalent}
    killed = sum(status in KILLED for status in judged.values())
    survivors = sorted(name for name, status in judged.items() if status not in KILLED)

    print("mutants:", ", ".join(f"{count} {status}" for status, count in counts.most_common()))
    print(f"equivalent (listed): {len(equivalent & set(checked))}")
    if judged:
        print(f"score: {killed} of {len(judged)} non-equivalent mutants killed = {100 * killed / len(judged):.1f} %")
    by_file = Counter(name.split(".x", 1)[0] for name in survivors)
    for module, count in by_file.most_common():
        print(f"  {count:4d} survive in {module}")
    print(f"known survivors (listed with why): {len(known & set(survivors))}")
    for name in survivors:
        if name not in known:
            print(f"survived: {name} ({statuses[name]})")
    return 0


def names_in(listing: Path) -> set[str]:
    """The mutant names of a listing: one per line, before its `#` and reason."""
    return {line.split("#", 1)[0].strip() for line in listing.read_text().splitlines()} - {""}


if __name__ == "__main__":
    sys.exit(main())
