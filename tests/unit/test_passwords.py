"""Password hashing at the configured cost (app/accounts/passwords.py)."""

import pytest

from app.accounts import passwords


@pytest.fixture
def cost():
    """Restore the hashing cost the test session uses."""
    before = passwords._hasher.time_cost, passwords._hasher.memory_cost
    yield passwords.configure
    passwords.configure(*before)


def test_hashes_carry_the_configured_cost_and_older_ones_still_verify_then_need_a_rehash(cost):
    cost(1, 8192)
    cheap = passwords.hash_password("correct horse battery")
    cost(2, 16384)
    dearer = passwords.hash_password("correct horse battery")

    assert "$m=8192,t=1," in cheap
    assert "$m=16384,t=2," in dearer
    assert passwords.verify_password(cheap, "correct horse battery")
    assert passwords.needs_rehash(cheap)
    assert not passwords.needs_rehash(dearer)
    assert not passwords.verify_password(None, "correct horse battery")  # an unknown user, at the same cost


def test_no_password_verifies_against_no_hash_not_even_the_placeholder_an_unknown_user_is_checked_against():
    assert not passwords.verify_password(None, "storefront-unknown-user-placeholder")


def test_the_policy_takes_passwords_of_exactly_the_shortest_and_the_longest_length():
    shortest, longest = "Kx7#" + "q" * (passwords.MIN_LENGTH - 4), "Kx7#" + "q" * (passwords.MAX_LENGTH - 4)

    assert passwords.policy_problems(shortest, "ada@example.test") == []
    assert passwords.policy_problems(longest, "ada@example.test") == []
    assert passwords.policy_problems(longest + "q", "ada@example.test") == ["Use at most 256 characters."]
