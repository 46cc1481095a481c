"""DOCS_ENABLED: on in development and test, off in production unless set."""

import pytest

from app.config import ConfigError, load_settings

PRODUCTION = {"APP_ENV": "production", "JWT_SECRET": "s" * 40, "DB_HOST": "db", "MAIL_BACKEND": "smtp"}


@pytest.mark.parametrize(("environment", "enabled"), [("development", True), ("test", True)])
def test_docs_are_on_outside_production(environment, enabled):
    assert load_settings({"APP_ENV": environment}).docs_enabled is enabled


def test_docs_are_off_in_production_unless_asked_for():
    assert load_settings(PRODUCTION).docs_enabled is False
    assert load_settings({**PRODUCTION, "DOCS_ENABLED": "true"}).docs_enabled is True
    assert load_settings({"APP_ENV": "development", "DOCS_ENABLED": "false"}).docs_enabled is False


def test_a_bad_value_names_the_variable():
    with pytest.raises(ConfigError) as raised:
        load_settings({"DOCS_ENABLED": "maybe"})
    assert raised.value.variable == "DOCS_ENABLED"
