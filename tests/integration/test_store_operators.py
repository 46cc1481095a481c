"""Pins every MongoDB query and update operator the products module relies on.

Runs against nx-27017 (tests/mongo_server.py) in CI and against a real MongoDB when MONGODB_URI
points at one, so a gap in the stand-in shows up here as one failing test, not as a wrong stock
figure. Each gap that app/products/mongo_dialect.py works around has a `test_gap_*` test here,
named in the workaround's docstring: on the stand-in it asserts the gap itself, so that it fails
once the gap is gone (or the stand-in replaced) and the workaround can go; on MongoDB it asserts
MongoDB's answer.
"""

import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import mongoengine
import pytest
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from app.products.mongo_dialect import (
    all_of,
    array_containing,
    count_matching,
    event_from_store,
    event_to_store,
    find_one_and_update_raising_on_duplicate,
    one_of,
    projected_subfield,
    stamped,
)

STAND_IN = not os.environ.get("MONGODB_URI")  # as tests/conftest.py's mongo_uri decides

AVAILABLE_AT_LEAST_3 = {"$expr": {"$gte": [{"$subtract": ["$stock", "$reserved"]}, 3]}}
HELD = str(uuid.UUID(int=1))  # reservation ids are UUIDs: dashes in a dotted key
OTHER = str(uuid.UUID(int=2))
SOLD = str(uuid.UUID(int=3))


@pytest.fixture
def things(app):
    collection = mongoengine.get_db()["operator_pins"]
    collection.drop()
    collection.create_index("key", unique=True)
    collection.insert_many(
        [
            {"key": "a", "stock": 5, "reserved": 3, "tags": ["x", "y"], "at": datetime(2020, 1, 1)},
            {"key": "b", "stock": 9, "reserved": 0, "tags": ["y"], "at": datetime(2021, 1, 1)},
        ]
    )
    yield collection
    collection.drop()


@pytest.fixture
def product(app):
    """A document shaped like a product with holds: holds.<id>: {qty, until, since}, sold.<id>: {qty, at}."""
    collection = mongoengine.get_db()["operator_pins"]
    collection.drop()
    collection.insert_one(
        {
            "key": "p",
            "stock": 10,
            "reserved": 5,
            "available": 5,
            "version": 7,
            "holds": {HELD: {"qty": 3, "until": 2000, "since": 1000}, OTHER: {"qty": 2, "until": 2500, "since": 1500}},
            "sold": {SOLD: {"qty": 1, "at": 900}},
        }
    )
    yield collection
    collection.drop()


@pytest.fixture
def thousand(app):
    """1,000 documents, all of them matching {"status": "active"}, which an index covers."""
    collection = mongoengine.get_db()["operator_pins"]
    collection.drop()
    collection.create_index([("status", 1), ("price", 1)])
    collection.insert_many([{"status": "active", "price": price} for price in range(1000)])
    yield collection
    collection.drop()


def keys(cursor) -> list[str]:
    return [document["key"] for document in cursor]


def expected(*, stand_in, mongodb):
    """What the server answers: the stand-in's gap when the tests run on it, else MongoDB's answer."""
    return stand_in if STAND_IN else mongodb


def outcome(action: Callable[[], object]) -> object:
    """What `action` returns, or the class of the PyMongoError it raises."""
    try:
        return action()
    except PyMongoError as error:
        return type(error)


def uses_index(explained: dict) -> bool:
    """Whether a find's plan reads an index: an IXSCAN stage on MongoDB, SQLite's "SEARCH ...
    USING INDEX" on nx-27017 (a "SCAN" of the table otherwise)."""
    plan = str(explained["queryPlanner"]["winningPlan"])
    return "IXSCAN" in plan or "USING INDEX" in plan


def fastest(action: Callable[[], object], runs: int = 5) -> float:
    """The shortest of `runs` timings of `action`, in seconds: the one least disturbed."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def test_unique_index_rejects_duplicates(things):
    with pytest.raises(DuplicateKeyError):
        things.insert_one({"key": "a"})


def test_unordered_insert_many_skips_duplicates_and_says_how_many_went_in(things):
    """catalog.import_products: the duplicates fail alone, with code 11000, and `nInserted` counts the rest."""
    with pytest.raises(BulkWriteError) as raised:
        things.insert_many([{"key": "c"}, {"key": "a"}, {"key": "d"}], ordered=False)
    assert [error["code"] for error in raised.value.details["writeErrors"]] == [11000]
    assert raised.value.details["nInserted"] == 2
    assert keys(things.find({}).sort([("key", 1)])) == ["a", "b", "c", "d"]


def test_query_operators(things):
    """catalog.get_products, _listing_query, archive_product, holds.active_holds."""
    assert keys(things.find({"tags": {"$all": ["x", "y"]}})) == ["a"]
    assert keys(things.find({"key": {"$in": ["b", "z"]}})) == ["b"]
    assert keys(things.find({"key": {"$in": []}})) == []
    assert keys(things.find({"stock": {"$gte": 6, "$lte": 9}})) == ["b"]
    assert keys(things.find({"reserved": {"$gt": 0}})) == ["a"]
    assert keys(things.find({"key": {"$ne": "a"}})) == ["b"]
    assert keys(things.find(all_of({"stock": {"$lt": 9}}, {"$expr": {"$gt": ["$stock", "$reserved"]}}))) == ["a"]
    assert keys(things.find(all_of({"tags": {"$all": ["y"]}}, {"$expr": {"$lte": ["$stock", "$reserved"]}}))) == []
    assert keys(things.find({}).sort([("stock", -1)]).skip(1).limit(1)) == ["a"]
    assert keys(things.find({}, {"_id": 0, "key": 1}).sort([("_id", -1)])) == ["b", "a"]


def test_count_stage(things):
    """mongo_dialect.count_matching: `$match` then `$count`. Nothing matching: MongoDB answers no document,
    nx-27017 a count of 0; count_matching reads both as 0."""
    assert list(things.aggregate([{"$match": {"tags": {"$all": ["y"]}}}, {"$count": "n"}])) == [{"n": 2}]
    assert list(things.aggregate([{"$match": {"key": "z"}}, {"$count": "n"}])) in ([], [{"n": 0}])


def test_find_one_and_update_returns_the_new_document(things):
    updated = things.find_one_and_update(
        {"key": "a", "stock": 5}, {"$inc": {"stock": 1}}, return_document=ReturnDocument.AFTER
    )
    assert updated["stock"] == 6
    assert things.find_one_and_update({"key": "a", "stock": 5}, {"$inc": {"stock": 1}}) is None


def test_guards_on_a_stored_counter(things):
    """catalog.adjust_stock and backfill_available, holds._change: the rule is in the filter,
    `$exists` keeps an `$inc` from creating a counter that a document does not have."""
    things.update_one({"key": "a"}, {"$set": {"available": 2}})
    assert things.update_one({"key": "a", "available": {"$gte": 3}}, {"$inc": {"available": -3}}).matched_count == 0
    assert things.update_one({"key": "a", "available": {"$gte": 2}}, {"$inc": {"available": -2}}).modified_count == 1
    assert (
        things.update_one({"key": "b", "available": {"$exists": True}}, {"$inc": {"available": 1}}).matched_count == 0
    )
    assert keys(things.find({"available": {"$exists": False}})) == ["b"]
    assert things.find_one({"key": "a"})["available"] == 0


def test_exists_on_a_dotted_map_key(product):
    """holds._change: a new hold only where none is (`holds.<id>` absent) and it was never sold."""
    assert keys(product.find({f"holds.{HELD}": {"$exists": True}})) == ["p"]
    assert keys(product.find({f"holds.{HELD}": {"$exists": False}})) == []
    assert keys(product.find({f"holds.{SOLD}": {"$exists": False}, f"sold.{SOLD}": {"$exists": True}})) == ["p"]
    fresh = str(uuid.uuid4())
    assert keys(product.find({f"holds.{fresh}": {"$exists": False}, f"sold.{fresh}": {"$exists": False}})) == ["p"]


def test_equality_on_a_dotted_nested_field(product):
    """holds._change, commit_reservation and _lapsed_released: the hold holds exactly this."""
    assert keys(product.find({f"holds.{HELD}.qty": 3})) == ["p"]
    assert keys(product.find({f"holds.{HELD}.qty": 3, f"holds.{HELD}.until": 2000})) == ["p"]
    assert keys(product.find({f"holds.{HELD}.qty": 2})) == []
    assert keys(product.find({f"holds.{HELD}.qty": 3, f"holds.{OTHER}.until": 2000})) == []
    assert keys(product.find({f"holds.{uuid.uuid4()}.qty": 3})) == []


def test_set_of_a_whole_subdocument_and_of_nested_fields(product):
    """holds._change: a new hold is `$set` whole; a changed one has `qty` and `until` `$set`
    alone, and keeps `since`."""
    fresh = str(uuid.uuid4())
    product.update_one({"key": "p"}, {"$set": {f"holds.{fresh}": {"qty": 4, "until": 3000, "since": 2000}}})
    product.update_one({"key": "p"}, {"$set": {f"holds.{HELD}.qty": 1, f"holds.{HELD}.until": 4000}})
    holds = product.find_one({"key": "p"})["holds"]
    assert holds == {
        HELD: {"qty": 1, "until": 4000, "since": 1000},
        OTHER: {"qty": 2, "until": 2500, "since": 1500},
        fresh: {"qty": 4, "until": 3000, "since": 2000},
    }


def test_unset_of_several_dotted_keys_in_one_update(product):
    """holds._lapsed_released and _forget_old_sales; unsetting a key that is not there is no error."""
    result = product.update_one(
        {"key": "p"}, {"$unset": {f"holds.{HELD}": "", f"holds.{OTHER}": "", f"holds.{uuid.uuid4()}": ""}}
    )
    assert result.modified_count == 1
    stored = product.find_one({"key": "p"})
    assert (stored["holds"], stored["sold"]) == ({}, {SOLD: {"qty": 1, "at": 900}})


def test_one_conditional_update_of_a_hold_and_its_counters(product):
    """holds.commit_reservation: `$unset` the hold, `$set` its sale, `$inc` the counters and
    `$currentDate` in one find_one_and_update, answered AFTER with a dotted field projected."""
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    after = product.find_one_and_update(
        {"key": "p", f"holds.{HELD}.qty": 3},
        stamped(
            {
                "$unset": {f"holds.{HELD}": ""},
                "$set": {f"sold.{HELD}": {"qty": 3, "at": 3000}},
                "$inc": {"stock": -3, "reserved": -3, "version": 1},
            }
        ),
        projection={"_id": 0, "key": 1, "stock": 1, "reserved": 1, "available": 1, "holds": 1, f"sold.{HELD}": 1},
        return_document=ReturnDocument.AFTER,
    )
    assert projected_subfield(after, "sold", HELD) == {"qty": 3, "at": 3000}
    assert SOLD not in after.get("sold", {})  # only the field asked for
    assert (after["stock"], after["reserved"], after["available"]) == (7, 2, 5)
    assert after["holds"] == {OTHER: {"qty": 2, "until": 2500, "since": 1500}}
    assert "version" not in after
    stored = product.find_one({"key": "p"})
    assert stored["sold"] == {SOLD: {"qty": 1, "at": 900}, HELD: {"qty": 3, "at": 3000}}
    assert (stored["version"], stored["updated_at"] >= before) == (8, True)


def test_a_hold_change_moves_counters_with_an_available_guard(product):
    """holds._change growing a hold: the hold as believed, enough available, all in one."""
    too_much = {"key": "p", f"holds.{HELD}.qty": 3, "available": {"$gte": 6}}
    update = {"$set": {f"holds.{HELD}.qty": 9}, "$inc": {"reserved": 6, "available": -6, "version": 1}}
    assert product.find_one_and_update(too_much, update) is None  # only 5 available
    grow = {"key": "p", f"holds.{HELD}.qty": 3, "available": {"$gte": 4}}
    update = {"$set": {f"holds.{HELD}.qty": 7}, "$inc": {"reserved": 4, "available": -4, "version": 1}}
    grown = product.find_one_and_update(grow, update, projection={"_id": 0}, return_document=ReturnDocument.AFTER)
    assert (grown["holds"][HELD], grown["reserved"], grown["available"]) == (
        {"qty": 7, "until": 2000, "since": 1000},
        9,
        1,
    )
    assert product.find_one_and_update(grow, update) is None  # applied once: the hold holds 7 now


def test_a_filter_that_matches_nothing_returns_none_and_changes_nothing(product):
    before = product.find_one({"key": "p"})
    stale = [
        {"key": "p", f"holds.{HELD}.qty": 2},  # the hold is not what the caller believes
        {"key": "p", f"holds.{HELD}": {"$exists": False}},  # a hold is there already
        {"key": "p", f"holds.{HELD}.qty": 3, "available": {"$gte": 6}},  # not enough available
        {"key": "missing", f"holds.{HELD}.qty": 3},
    ]
    update = {
        "$unset": {f"holds.{HELD}": ""},
        "$set": {f"sold.{HELD}": {"qty": 3, "at": 3000}},
        "$inc": {"stock": -3, "reserved": -3, "version": 1},
    }
    for conditions in stale:
        assert product.find_one_and_update(conditions, stamped(update), return_document=ReturnDocument.AFTER) is None
    assert product.find_one({"key": "p"}) == before
    assert product.count_documents({}) == 1


def test_current_date_stores_a_datetime(things):
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    things.update_one({"key": "a"}, stamped({"$set": {"note": "n"}}))
    assert isinstance(things.find_one({"key": "a"})["updated_at"], datetime)
    assert things.find_one({"key": "a"})["updated_at"] >= before


def test_gap_expr_filter_is_honoured_only_under_and(things):
    """mongo_dialect.all_of: nx-27017 drops the fields beside an `$expr` that computes, in a
    find as in an update filter; under `$and` they hold."""
    wrapped = all_of({"key": "a"}, {"stock": {"$gte": 100}}, AVAILABLE_AT_LEAST_3)
    assert things.update_one(wrapped, {"$inc": {"stock": 1}}).matched_count == 0
    beside = {"key": "a", "stock": {"$gte": 100}, **AVAILABLE_AT_LEAST_3}
    assert keys(things.find(beside)) == expected(stand_in=["b"], mongodb=[])
    assert things.update_one(beside, {"$inc": {"stock": 1}}).matched_count == expected(stand_in=1, mongodb=0)


def test_gap_set_of_a_datetime(things):
    """mongo_dialect.stamped: nx-27017 stores a datetime sent with `$set` as a string; MongoDB
    keeps a datetime. The app never `$set`s datetimes (it uses `$currentDate` or epoch milliseconds)."""
    things.update_one({"key": "a"}, {"$set": {"at": datetime(2022, 1, 1)}})
    stored = things.find_one({"key": "a"})["at"]
    assert stored in (datetime(2022, 1, 1), "2022-01-01 00:00:00")
    assert stored == expected(stand_in="2022-01-01 00:00:00", mongodb=datetime(2022, 1, 1))


def test_gap_count_documents_counts_in_python(thousand):
    """mongo_dialect.count_matching: `count_documents` ends its pipeline in `$group`, which
    nx-27017 runs document by document in Python, many times slower than `$count` (some 40
    times for these 1,000). MongoDB counts the same either way."""
    active = {"status": "active"}
    assert thousand.count_documents(active) == count_matching(thousand, active) == 1000
    grouped = fastest(lambda: thousand.count_documents(active))
    counted = fastest(lambda: count_matching(thousand, active))
    if STAND_IN:  # no timing is asserted on MongoDB
        assert grouped > 5 * counted, f"count_documents {grouped * 1000:.1f} ms, $count {counted * 1000:.1f} ms"


def test_gap_in_is_a_scan(things):
    """mongo_dialect.one_of: nx-27017 reads an indexed field's equality from the index but scans
    the collection for `$in`, even of one value; MongoDB reads the index for both."""
    assert uses_index(things.find({"key": "b"}).explain())
    assert uses_index(things.find({"key": {"$in": ["b"]}}).explain()) == expected(stand_in=False, mongodb=True)
    assert uses_index(things.find({"key": one_of(["b"])}).explain())
    assert keys(things.find({"key": one_of(["b"])})) == keys(things.find({"key": {"$in": ["b"]}})) == ["b"]
    assert keys(things.find({"key": one_of(["b", "a"])}).sort([("key", 1)])) == ["a", "b"]


def test_gap_equality_on_an_indexed_array_misses(things):
    """mongo_dialect.array_containing: with an index on the array, nx-27017 matches no document
    by equality with an element; MongoDB matches those holding it. `$all` of one matches on both."""
    things.create_index("tags")
    assert keys(things.find({"tags": "y"}).sort([("key", 1)])) == expected(stand_in=[], mongodb=["a", "b"])
    assert keys(things.find({"tags": array_containing("y")}).sort([("key", 1)])) == ["a", "b"]
    assert keys(things.find({"tags": array_containing("x")})) == ["a"]


def test_gap_find_one_and_update_onto_a_taken_unique_key_answers_none(things):
    """mongo_dialect.find_one_and_update_raising_on_duplicate: an update that would repeat a
    unique key is refused by both, but nx-27017's find_one_and_update answers None (as when its
    filter matches nothing) where MongoDB raises DuplicateKeyError."""
    onto_a = ({"key": "b"}, {"$set": {"key": "a"}})
    assert outcome(lambda: things.find_one_and_update(*onto_a)) == expected(stand_in=None, mongodb=DuplicateKeyError)
    with pytest.raises(DuplicateKeyError):
        find_one_and_update_raising_on_duplicate(things, *onto_a, unique={"key": "a"})
    assert keys(things.find({}).sort([("key", 1)])) == ["a", "b"]
    updated = find_one_and_update_raising_on_duplicate(
        things, {"key": "b"}, {"$set": {"key": "c"}}, unique={"key": "c"}, return_document=ReturnDocument.AFTER
    )
    assert updated["key"] == "c"


def test_gap_a_dotted_projection_comes_back_flat(product):
    """mongo_dialect.projected_subfield: a field projected by its dotted path comes back from
    nx-27017 under the flat key "sold.<id>"; MongoDB nests it under `sold`."""
    found = product.find_one({"key": "p"}, {"_id": 0, f"sold.{SOLD}": 1})
    sale = {"qty": 1, "at": 900}
    assert found == expected(stand_in={f"sold.{SOLD}": sale}, mongodb={"sold": {SOLD: sale}})
    assert projected_subfield(found, "sold", SOLD) == sale
    assert projected_subfield(found, "sold", HELD) is None


# --- the events outbox in the product document (app/products/events.py) ----------------------


def test_events_pushed_as_text_come_back_in_order_and_are_pulled_one_by_one_while_still_there(things):
    first, second = '{"id":"e1"}', '{"id":"e2"}'
    for text in (first, second):
        things.update_one({"key": "a"}, {"$push": {"outbox": text}, "$inc": {"outbox_size": 1}})

    assert keys(things.find({"outbox_size": {"$gt": 0}})) == ["a"]
    assert things.find_one({"key": "a"})["outbox"] == [first, second]
    pulled = things.update_one({"key": "a", "outbox": first}, {"$pull": {"outbox": first}, "$inc": {"outbox_size": -1}})
    again = things.update_one({"key": "a", "outbox": first}, {"$pull": {"outbox": first}, "$inc": {"outbox_size": -1}})
    assert (pulled.modified_count, again.modified_count) == (1, 0)
    assert things.find_one({"key": "a"}, {"_id": 0, "outbox": 1, "outbox_size": 1}) == {
        "outbox": [second],
        "outbox_size": 1,
    }


def test_gap_a_pushed_sub_document_comes_back_as_text(things):
    """mongo_dialect.event_to_store, why the product outbox holds JSON text: nx-27017 turns a
    pushed document into its JSON text (MongoDB keeps a document). Text is the same on both."""
    things.update_one({"key": "a"}, {"$push": {"outbox": {"id": "e1"}}})
    stored = things.find_one({"key": "a"})["outbox"][0]
    assert stored in ({"id": "e1"}, '{"id":"e1"}')
    assert stored == expected(stand_in='{"id":"e1"}', mongodb={"id": "e1"})
    things.update_one({"key": "b"}, {"$push": {"outbox": event_to_store({"id": "e2", "n": [1]})}})
    assert event_from_store(things.find_one({"key": "b"})["outbox"][0]) == {"id": "e2", "n": [1]}
