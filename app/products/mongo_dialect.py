"""The query and update shapes the products module sends where a plainer one would do on MongoDB
but not on nx-27017, the MongoDB wire-protocol server the tests run against (tests/mongo_server.py).

Each shape is one function here, and only here: its docstring says what it does on MongoDB, which
gap of the stand-in chose it, and the test of tests/integration/test_store_operators.py that
reproduces the gap. That test fails once the stand-in no longer has the gap (or is replaced): the
function can then take the plain shape, and its callers stay as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError


def count_matching(collection: Collection, query: dict[str, Any]) -> int:
    """Documents matching `query`: `$match`, then `$count`.

    MongoDB counts the same with `count_documents`, whose pipeline ends in `$group`; the stand-in
    runs a `$group` document by document in Python (38 ms for 1,000 products, against 0.7 ms for
    `$count`). With nothing matching, MongoDB's `$count` answers no document, the stand-in a count
    of 0: both read as 0. Pinned by test_gap_count_documents_counts_in_python.
    """
    counted = next(collection.aggregate([{"$match": query}, {"$count": "n"}]), None)
    return counted["n"] if counted else 0


def one_of(values: list[Any]) -> Any:
    """A filter value matching any of `values` (scalars): the value itself when there is one.

    On MongoDB `{"$in": [x]}` and `x` are the same query, both answered from the field's index;
    the stand-in answers `$in` with a scan of the collection, equality from the index. Several
    values stay one `$in`, so one command (the round-trip budgets of bench/round_trips.py count
    commands), a scan on the stand-in. Pinned by test_gap_in_is_a_scan.
    """
    return values[0] if len(values) == 1 else {"$in": values}


def array_containing(value: Any) -> dict[str, Any]:
    """A filter value matching an array field that holds `value`: `$all` of one.

    On MongoDB plain equality (`{"tags": value}`) does the same; on the stand-in, equality on an
    indexed array field matches nothing. Pinned by test_gap_equality_on_an_indexed_array_misses.
    """
    return {"$all": [value]}


def find_one_and_update_raising_on_duplicate(
    collection: Collection, conditions: dict[str, Any], update: dict[str, Any], *, unique: Mapping[str, Any], **options
) -> dict[str, Any] | None:
    """`find_one_and_update`, raising DuplicateKeyError when it would set a value of `unique`
    (fields of unique indexes) that another document holds.

    MongoDB raises it from the index (which also settles two updates racing for one value); the
    stand-in answers None instead, as for a filter that matched nothing, so the values are looked
    up first. Pinned by test_gap_find_one_and_update_onto_a_taken_unique_key_answers_none.
    """
    for field, value in unique.items():
        if collection.find_one({field: value}, {"_id": 1}) is not None:
            raise DuplicateKeyError(f"E11000 duplicate key error: {field} {value!r} is taken", 11000)
    return collection.find_one_and_update(conditions, update, **options)


def stamped(update: dict[str, Any]) -> dict[str, Any]:
    """`update` that also sets `updated_at` to the server's clock, with `$currentDate`.

    MongoDB stores a datetime given to `$set` as a datetime; the stand-in stores it as a string,
    so the app never `$set`s one (datetimes that change after insert are epoch milliseconds,
    models.to_epoch_ms). Pinned by test_gap_set_of_a_datetime.
    """
    return {**update, "$currentDate": {"updated_at": True}}


def all_of(*conditions: dict[str, Any]) -> dict[str, Any]:
    """A filter matching every condition, always under `$and`.

    MongoDB honours the fields beside an `$expr` at the top of a filter; the stand-in ignores
    them, in a find as in an update, when the `$expr` computes (a `$subtract`, say), so an
    `$expr` goes under `$and` with the rest. Pinned by test_gap_expr_filter_is_honoured_only_under_and.
    """
    return {"$and": list(conditions)}


def projected_subfield(document: dict[str, Any], parent: str, key: str) -> Any:
    """`parent.key` of a document read with that dotted path in its projection, or None.

    MongoDB answers it nested, `{parent: {key: ...}}`; the stand-in answers the flat key
    "parent.key". Pinned by test_gap_a_dotted_projection_comes_back_flat.
    """
    return document.get(parent, {}).get(key) or document.get(f"{parent}.{key}")


def event_to_store(event: dict[str, Any]) -> str:
    """An event as it is `$push`ed into a document: its JSON text.

    MongoDB would keep a pushed sub-document as one; the stand-in turns it into its JSON text,
    so text it is on both, and `$pull` matches the very text pushed. Pinned by
    test_gap_a_pushed_sub_document_comes_back_as_text.
    """
    return json.dumps(event, separators=(",", ":"))


def event_from_store(stored: str) -> dict[str, Any]:
    """An event as `event_to_store` stored it."""
    return json.loads(stored)
