"""Catalog rules: create, read, list, update, archive and restock products."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.extensions import cache
from app.products import events
from app.products.dto import (
    Product,
    ProductChanges,
    ProductDraft,
    ProductFilters,
    ProductPage,
)
from app.products.errors import (
    ProductIdTaken,
    ProductNotFound,
    SkuTaken,
    StockBelowReserved,
    VersionMismatch,
)
from app.products.models import LAPSE_GRACE, StockMovement, to_epoch_ms, utcnow
from app.products.models import Product as ProductDocument
from app.products.money import to_cents, to_decimal
from app.products.mongo_dialect import (
    all_of,
    array_containing,
    count_matching,
    find_one_and_update_raising_on_duplicate,
    one_of,
    stamped,
)

# Fields a DTO needs (the holds, to leave lapsed ones out); the rest (keywords, sales) stays in the store.
DTO_FIELDS = [
    *("product_id", "sku", "name", "description", "category", "tags", "price_cents", "currency"),
    *("stock", "reserved", "holds", "status", "created_at", "updated_at", "version"),
]
PROJECTION = {"_id": 0, **dict.fromkeys(DTO_FIELDS, 1)}
SORTS = {
    "price": [("price_cents", 1), ("product_id", 1)],
    "-price": [("price_cents", -1), ("product_id", 1)],
    "name": [("name", 1), ("product_id", 1)],
    # _id (an ObjectId) grows with insertion time and is always indexed: creation order for free.
    "createdAt": [("_id", 1)],
    "-createdAt": [("_id", -1)],
}
WORD = re.compile(r"\w+")
DUPLICATE_KEY = 11000


def collection():
    return ProductDocument._get_collection()


def keywords_of(*texts: str) -> list[str]:
    """Normalised search tokens: case- and accent-insensitive words, each once."""
    tokens: dict[str, None] = {}
    for text in texts:
        for word in WORD.findall(_fold(text)):
            tokens[word] = None
    return list(tokens)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def lapsed_units(raw: dict[str, Any]) -> int:
    """Units held by the product's holds past their expiry (plus LAPSE_GRACE): they no longer
    count as reserved, and the next reservation that needs them releases them (holds.py)."""
    holds = raw.get("holds")
    if not holds:
        return 0
    lapsed_before = to_epoch_ms(utcnow() - LAPSE_GRACE)
    return sum(hold["qty"] for hold in holds.values() if hold["until"] < lapsed_before)


def to_dto(raw: dict[str, Any]) -> Product:
    """The product as answered; lapsed holds do not count as reserved."""
    return Product(
        product_id=raw["product_id"],
        sku=raw["sku"],
        name=raw["name"],
        description=raw.get("description", ""),
        category=raw.get("category", ""),
        tags=tuple(raw.get("tags") or ()),
        price=to_decimal(raw["price_cents"]),
        currency=raw.get("currency", "USD"),
        stock=raw.get("stock", 0),
        reserved=raw.get("reserved", 0) - lapsed_units(raw),
        status=raw.get("status", "active"),
        created_at=raw["created_at"].replace(tzinfo=UTC),
        updated_at=raw["updated_at"].replace(tzinfo=UTC),
        version=raw.get("version", 1),
    )


def get_product(product_id: str) -> Product:
    raw = collection().find_one({"product_id": product_id}, PROJECTION)
    if raw is None:
        raise ProductNotFound(f"No product with productId {product_id!r}.", product_id=product_id)
    return to_dto(raw)


def get_products(product_ids: Iterable[str]) -> tuple[Product, ...]:
    wanted = list(dict.fromkeys(product_ids))
    if not wanted:
        return ()
    found = {raw["product_id"]: to_dto(raw) for raw in collection().find({"product_id": one_of(wanted)}, PROJECTION)}
    return tuple(found[product_id] for product_id in wanted if product_id in found)


def list_products(filters: ProductFilters, sort: str, page: int, page_size: int) -> ProductPage:
    """One page, read with one more item than it shows: without a next page the total is known
    from this page alone; with one, it is counted (and kept for the micro-cache's TTL)."""
    query = _listing_query(filters)
    cursor = collection().find(query, PROJECTION).sort(SORTS[sort]).skip((page - 1) * page_size).limit(page_size + 1)
    raws = list(cursor)
    items = tuple(to_dto(raw) for raw in raws[:page_size])
    last_page_reached = len(raws) <= page_size and (items or page == 1)
    total = (page - 1) * page_size + len(items) if last_page_reached else _counted(query)
    return ProductPage(items=items, total=total, page=page, page_size=page_size)


def _counted(query: dict[str, Any]) -> int:
    key = "products:count:" + repr(sorted(query.items(), key=repr))
    total = cache.get(key)
    if total is None:
        total = count_matching(collection(), query)
        cache.set(key, total)
    return total


def exists(query: dict[str, Any]) -> bool:
    return collection().find_one(query, {"_id": 1}) is not None


def _listing_query(filters: ProductFilters) -> dict[str, Any]:
    query: dict[str, Any] = {"status": "active"}
    if filters.q:
        tokens = keywords_of(filters.q)
        query["keywords"] = {"$all": tokens} if tokens else {"$in": []}
    if filters.category:
        query["category"] = filters.category.strip().lower()
    if filters.tag:
        query["tags"] = array_containing(filters.tag.strip().lower())
    price: dict[str, int] = {}
    if filters.min_price is not None:
        price["$gte"] = to_cents(filters.min_price)
    if filters.max_price is not None:
        price["$lte"] = to_cents(filters.max_price)
    if price:
        query["price_cents"] = price
    if filters.in_stock is not None:
        comparison = "$gt" if filters.in_stock else "$lte"
        return all_of(query, {"$expr": {comparison: ["$stock", "$reserved"]}})
    return query


def new_document(draft: ProductDraft) -> dict[str, Any]:
    now = utcnow()
    return {
        "product_id": draft.product_id or uuid.uuid4().hex,
        "sku": draft.sku,
        "name": draft.name,
        "description": draft.description,
        "category": draft.category.strip().lower(),
        "tags": normalise_tags(draft.tags),
        "keywords": keywords_of(draft.name, draft.description),
        "price_cents": to_cents(draft.price),
        "currency": draft.currency,
        "stock": draft.stock,
        "reserved": 0,
        "available": draft.stock,
        "status": "active",
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "holds": {},
        "sold": {},
    }


def normalise_tags(tags: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(tag.strip().lower() for tag in tags if tag.strip()))


def create_product(draft: ProductDraft) -> Product:
    document = events.first_events(new_document(draft))
    try:
        collection().insert_one(document)
    except DuplicateKeyError:
        raise _duplicate_error(document["product_id"], document["sku"]) from None
    return to_dto(document)


def _duplicate_error(product_id: str, sku: str) -> ProductIdTaken | SkuTaken:
    if exists({"product_id": product_id}):
        return ProductIdTaken(f"productId {product_id!r} is already taken.", product_id=product_id)
    return SkuTaken(f"SKU {sku!r} is already taken.", sku=sku)


def update_product(product_id: str, changes: ProductChanges, expected_version: int) -> Product:
    current = get_product(product_id)
    if current.version != expected_version:
        raise _stale(current)
    updates = _changed_fields(current, changes)
    if not updates:
        return current
    try:
        changed = {name: value for name, value in updates.items() if name != "keywords"}
        raw = find_one_and_update_raising_on_duplicate(
            collection(),
            {"product_id": product_id, "version": expected_version},
            stamped(
                events.recorded(
                    {"$set": updates, "$inc": {"version": 1}}, "product.updated", product_id, {"changes": changed}
                )
            ),
            unique={"sku": updates["sku"]} if "sku" in updates else {},
            projection=PROJECTION,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        raise SkuTaken(f"SKU {changes.sku!r} is already taken.", sku=changes.sku) from None
    if raw is None:
        raise _stale(get_product(product_id))
    return to_dto(raw)


def _stale(current: Product) -> VersionMismatch:
    return VersionMismatch(
        f"Product {current.product_id!r} has changed (now version {current.version}); fetch it again.",
        current_version=current.version,
    )


def _changed_fields(current: Product, changes: ProductChanges) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for name in ("sku", "name", "description", "currency", "status"):
        value = getattr(changes, name)
        if value is not None and value != getattr(current, name):
            updates[name] = value
    if changes.category is not None and changes.category.strip().lower() != current.category:
        updates["category"] = changes.category.strip().lower()
    if changes.tags is not None and tuple(normalise_tags(changes.tags)) != current.tags:
        updates["tags"] = normalise_tags(changes.tags)
    if changes.price is not None and changes.price != current.price:
        updates["price_cents"] = to_cents(changes.price)
    if "name" in updates or "description" in updates:
        updates["keywords"] = keywords_of(
            updates.get("name", current.name), updates.get("description", current.description)
        )
    return updates


def archive_product(product_id: str) -> Product:
    """Hide the product from the catalog; the document is kept. Archiving twice is a no-op."""
    raw = collection().find_one_and_update(
        {"product_id": product_id, "status": {"$ne": "archived"}},
        stamped(
            events.recorded(
                {"$set": {"status": "archived"}, "$inc": {"version": 1}}, "product.archived", product_id, {}
            )
        ),
        projection=PROJECTION,
        return_document=ReturnDocument.AFTER,
    )
    return get_product(product_id) if raw is None else to_dto(raw)


def adjust_stock(product_id: str, delta: int, reason: str) -> Product:
    """Change on-hand stock by `delta`; never below what carts have reserved."""
    for _ in range(2):  # twice: once more after filling in `available` on an older document
        raw = collection().find_one_and_update(
            {"product_id": product_id, "available": {"$gte": -delta}},
            stamped(
                events.stock_changed(
                    {"$inc": {"stock": delta, "available": delta, "version": 1}},
                    product_id,
                    "adjustment",
                    stock=delta,
                    available=delta,
                )
            ),
            projection=PROJECTION,
            return_document=ReturnDocument.AFTER,
        )
        if raw is not None:
            product = to_dto(raw)
            StockMovement(product_id=product_id, delta=delta, reason=reason, stock_after=product.stock).save()
            return product
        current = collection().find_one({"product_id": product_id}, {"_id": 0, "available": 1, **PROJECTION})
        if current is None:
            raise ProductNotFound(f"No product with productId {product_id!r}.", product_id=product_id)
        if not backfill_available(current):
            break
    current = to_dto(current)
    raise StockBelowReserved(
        f"Stock cannot drop by {-delta}: {current.stock} on hand, {current.reserved} reserved.",
        stock=current.stock,
        reserved=current.reserved,
        available=current.available,
    )


def backfill_available(raw: dict[str, Any]) -> bool:
    """Give a product stored before the `available` field existed its value (stock - reserved);
    False when `raw` has it already. Every writer of `stock` or `reserved` moves `available`
    by the same update, and the stock rules filter on it, so it must be there."""
    if "available" in raw:
        return False
    collection().update_one(
        {
            "product_id": raw["product_id"],
            "stock": raw["stock"],
            "reserved": raw["reserved"],
            "available": {"$exists": False},
        },
        {"$set": {"available": raw["stock"] - raw["reserved"]}},
    )
    return True


def import_products(drafts: Iterable[ProductDraft]) -> int:
    """Insert the drafts whose productId and SKU are free; returns how many were inserted."""
    documents = [events.first_events(new_document(draft)) for draft in drafts]
    if not documents:
        return 0
    try:
        return len(collection().insert_many(documents, ordered=False).inserted_ids)
    except BulkWriteError as error:
        if any(write_error["code"] != DUPLICATE_KEY for write_error in error.details["writeErrors"]):
            raise
        return error.details["nInserted"]


def delete_all_products() -> int:
    StockMovement.objects.delete()
    return collection().delete_many({}).deleted_count
