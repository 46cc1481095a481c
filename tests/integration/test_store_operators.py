"""Pins every MongoDB query and update operator the products module relies on.

Runs against nx-27017 in CI and against a real MongoDB when MONGODB_URI points at one, so a
gap in the stand-in shows up here as one failing test, not as a wrong stock figure. The
two gaps we work around (see app/products/models.py: `stamped`, `all_of`) are pinned too.
"""

from datetime import UTC, datetime

import mongoengine
import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.products.models import all_of, stamped

AVAILABLE_AT_LEAST_3 = {"$expr": {"$gte": [{"$subtract": ["$stock", "$reserved"]}, 3]}}


@pytest.fixture
def things(app):
    collection = mongoengine.get_db()["operator_pins"]
    collection.drop()
    collection.create_index("key", unique=True)
    collection.insert_many(
        [
            {"key": "a", "stock": 5, "reserved": 3, "tags": ["x", "y"], "steps": ["s1"], "at": datetime(2020, 1, 1)},
            {"key": "b", "stock": 9, "reserved": 0, "tags": ["y"], "steps": [], "at": datetime(2021, 1, 1)},
        ]
    )
    yield collection
    collection.drop()


def keys(cursor) -> list[str]:
    return [document["key"] for document in cursor]


def test_unique_index_rejects_duplicates(things):
    with pytest.raises(DuplicateKeyError):
        things.insert_one({"key": "a"})


def test_query_operators(things):
    assert keys(things.find({"tags": "x"})) == ["a"]
    assert keys(things.find({"tags": {"$all": ["x", "y"]}})) == ["a"]
    assert keys(things.find({"key": {"$in": ["b", "z"]}})) == ["b"]
    assert keys(things.find({"steps": {"$nin": ["s1"]}})) == ["b"]
    assert keys(things.find({"stock": {"$gte": 6, "$lte": 9}})) == ["b"]
    assert keys(things.find({"key": {"$ne": "a"}})) == ["b"]
    assert keys(things.find(all_of({"stock": {"$lt": 9}}, {"$expr": {"$gt": ["$stock", "$reserved"]}}))) == ["a"]
    assert keys(things.find({}).sort([("stock", -1)]).skip(1).limit(1)) == ["a"]
    assert things.count_documents({"tags": "y"}) == 2


def test_conditional_increment_and_scalar_array_push_pull(things):
    guarded = all_of({"key": "b", "steps": {"$nin": ["s2"]}}, AVAILABLE_AT_LEAST_3)
    update = {"$inc": {"reserved": 3}, "$push": {"steps": "s2"}}
    assert things.update_one(guarded, update).modified_count == 1
    assert things.update_one(guarded, update).modified_count == 0  # the step applies once
    assert things.update_one({"key": "b"}, {"$pull": {"steps": "s2"}}).modified_count == 1
    after = things.find_one({"key": "b"})
    assert (after["reserved"], after["steps"]) == (3, [])


def test_find_one_and_update_returns_the_new_document(things):
    updated = things.find_one_and_update(
        {"key": "a", "stock": 5}, {"$inc": {"stock": 1}}, return_document=ReturnDocument.AFTER
    )
    assert updated["stock"] == 6
    assert things.find_one_and_update({"key": "a", "stock": 5}, {"$inc": {"stock": 1}}) is None


def test_claim_without_reading_first(things):
    """reservations._claim: one findAndModify whose filter says what must hold (an idle record,
    i.e. a null field, and a value other than the one asked for)."""
    claim = {"key": "a", "step": None, "stock": {"$ne": 7}}
    claimed = things.find_one_and_update(
        claim, {"$set": {"step": "s", "stock": 7}, "$inc": {"v": 1}}, return_document=ReturnDocument.AFTER
    )
    assert (claimed["step"], claimed["stock"], claimed["v"]) == ("s", 7, 1)
    assert things.find_one_and_update(claim, {"$set": {"step": "t"}}) is None  # no longer idle
    things.update_one({"key": "a"}, {"$set": {"step": None}})
    assert things.find_one_and_update(claim, {"$set": {"step": "t"}}) is None  # already 7


def test_guards_on_a_stored_counter(things):
    """reservations._apply and catalog.adjust_stock: the rule is in the filter, `$exists`
    keeps an `$inc` from creating a counter that a document does not have."""
    things.update_one({"key": "a"}, {"$set": {"available": 2}})
    assert things.update_one({"key": "a", "available": {"$gte": 3}}, {"$inc": {"available": -3}}).matched_count == 0
    assert things.update_one({"key": "a", "available": {"$gte": 2}}, {"$inc": {"available": -2}}).modified_count == 1
    assert (
        things.update_one({"key": "b", "available": {"$exists": True}}, {"$inc": {"available": 1}}).matched_count == 0
    )
    assert keys(things.find({"available": {"$exists": False}})) == ["b"]
    assert things.find_one({"key": "a"})["available"] == 0


def test_current_date_stores_a_datetime(things):
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    things.update_one({"key": "a"}, stamped({"$set": {"note": "n"}}))
    assert isinstance(things.find_one({"key": "a"})["updated_at"], datetime)
    assert things.find_one({"key": "a"})["updated_at"] >= before


def test_gap_expr_filter_is_honoured_only_under_and(things):
    """nx-27017 drops the fields beside `$expr` in an update filter; `all_of` avoids it."""
    wrapped = all_of({"key": "a"}, {"stock": {"$gte": 100}}, AVAILABLE_AT_LEAST_3)
    assert things.update_one(wrapped, {"$inc": {"stock": 1}}).matched_count == 0


def test_gap_set_of_a_datetime(things):
    """nx-27017 stores a datetime sent with `$set` as a string; MongoDB keeps a datetime.
    The app never `$set`s datetimes (it uses `$currentDate` or epoch milliseconds)."""
    things.update_one({"key": "a"}, {"$set": {"at": datetime(2022, 1, 1)}})
    stored = things.find_one({"key": "a"})["at"]
    assert stored in (datetime(2022, 1, 1), "2022-01-01 00:00:00")


def test_gap_ne_null_matches_missing_fields(things):
    """nx-27017's `{"f": {"$ne": None}}` also matches documents without `f` (MongoDB does not);
    reconcile.py asks for `{"$type": "string"}` instead, which both answer alike."""
    things.update_one({"key": "a"}, {"$set": {"step": "s"}})
    assert keys(things.find({"step": {"$type": "string"}})) == ["a"]
    assert keys(things.find({"step": {"$ne": None}})) in (["a"], ["a", "b"])
