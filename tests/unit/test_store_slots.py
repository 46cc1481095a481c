"""The prepared store slots of scripts/mutation.sh: each concurrent session holds its own."""

from __future__ import annotations

import pytest

from tests.store_slots import SLOTS_ENV, StoreSlot, taken_slot, write_slots


def test_concurrent_sessions_take_different_slots_and_a_slot_frees_when_its_session_ends(tmp_path, monkeypatch):
    slots = [StoreSlot(f"postgresql:///slot{n}", f"mongodb://127.0.0.1:1/slot{n}") for n in range(2)]
    write_slots(tmp_path / "slots.json", slots)
    monkeypatch.setenv(SLOTS_ENV, str(tmp_path / "slots.json"))

    with taken_slot() as first, taken_slot() as second:
        assert {first, second} == set(slots)
        with pytest.raises(RuntimeError, match="all 2 prepared store slots"), taken_slot():
            pass
    with taken_slot() as again:
        assert again == slots[0]


def test_without_prepared_slots_a_session_makes_its_own_stores(monkeypatch):
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    with taken_slot() as slot:
        assert slot is None
