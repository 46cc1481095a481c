"""The import-linter contracts in pyproject.toml catch a forbidden import.

CI runs `lint-imports` on the real tree, which only shows that it is clean today; this runs it
on a copy with a leak planted, to show the contracts would fail the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def copy_of_the_app(destination: Path) -> Path:
    shutil.copytree(REPO / "app", destination / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", destination / "pyproject.toml")
    return destination


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the copy: PYTHONPATH puts the copied `app` ahead of the installed one."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_contracts_hold_on_an_unmodified_copy(tmp_path):
    result = lint_imports(copy_of_the_app(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cart_importing_the_products_models_breaks_the_independence_contract(tmp_path):
    root = copy_of_the_app(tmp_path)
    (root / "app" / "cart" / "leak.py").write_text("from app.products import models\n")

    result = lint_imports(root)

    assert result.returncode != 0
    assert "Modules are independent apart from their interfaces BROKEN" in result.stdout
    assert "app.cart.leak -> app.products.models" in result.stdout
