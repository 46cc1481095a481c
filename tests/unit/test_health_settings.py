"""HEALTH_RATE_LIMIT: a default, and one clear line for a bad value."""

import pytest

from app.config import ConfigError, load_settings


def test_the_health_limit_defaults_to_120_per_minute():
    assert load_settings({}).health_rate_limit == "120 per minute"
    assert load_settings({"HEALTH_RATE_LIMIT": "10 per second"}).health_rate_limit == "10 per second"


def test_a_bad_health_limit_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigError) as raised:
        load_settings({"HEALTH_RATE_LIMIT": "often"})
    assert raised.value.variable == "HEALTH_RATE_LIMIT"
