"""Every setting is declared once (app/config.py), and the README's table, `.env.example` and
the code agree with the declarations."""

import re
from pathlib import Path

from app.config import Settings, declared_variables, load_settings, variable_names
from app.config_docs import with_table

REPO = Path(__file__).resolve().parents[2]
# The Python the image runs; the shell scripts read only compose's and their own variables.
CODE = [*sorted((REPO / "app").rglob("*.py")), *(REPO / name for name in ("gunicorn.conf.py", "wsgi.py", "seed.py"))]
CODE += sorted((REPO / "scripts").glob("*.py"))
# A variable named in a string: read from the process's environment, or named by a ConfigError.
VARIABLE_READ = re.compile(
    r"""(?:os\.environ\.get|os\.getenv|os\.environ\.setdefault|\.text|ConfigError)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\]"""
)


def env_example() -> str:
    return (REPO / ".env.example").read_text()


def test_the_readmes_table_is_the_one_the_declarations_make():
    readme = (REPO / "README.md").read_text()
    assert with_table(readme) == readme, "README.md's settings table is stale: run python -m app.config_docs --write"


def names_read(path: Path) -> set[str]:
    return {name for match in VARIABLE_READ.finditer(path.read_text()) for name in match.groups() if name}


def test_the_code_reads_only_declared_variables():
    undeclared = {f"{path.relative_to(REPO)}: {name}" for path in CODE for name in names_read(path) - variable_names()}
    assert undeclared == set(), "declare them in app/config.py (setting(...)), then python -m app.config_docs --write"


def test_the_scan_sees_what_it_looks_for():
    assert {"PROMETHEUS_MULTIPROC_DIR", "JWT_SECRET", "DATABASE_URL"} <= set().union(*map(names_read, CODE))


def test_each_variable_is_declared_once():
    names = [
        name
        for variable in declared_variables()
        for name in (variable.name, *variable.aliases, *(part.name for part in variable.parts))
    ]
    assert len(names) == len(set(names))


def test_the_declared_defaults_are_the_ones_read_from_an_empty_environment():
    assert load_settings({}) == Settings()


def test_an_alias_is_read_when_its_variable_is_unset():
    assert load_settings({"NODE_ENV": "test"}).env == "test"
    assert load_settings({"APP_ENV": "test", "NODE_ENV": "development"}).env == "test"
    assert load_settings({"APP_ENV": " ", "NODE_ENV": "test"}).env == "test"  # blank is unset


def test_env_example_lists_every_setting():
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", env_example(), re.MULTILINE))
    assert variable_names() - listed == set()


def test_env_example_values_are_the_defaults():
    """Copying .env.example to .env changes nothing; examples of other values are commented out."""
    defaults = load_settings({})
    for name, value in re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", env_example(), re.MULTILINE):
        value = value.strip().strip('"')
        if name in variable_names() and value:
            assert load_settings({name: value}) == defaults, f"{name}={value} is not its default"
