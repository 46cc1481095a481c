"""Carts and product snapshots kept in Redis, so that most cart reads touch no database.

Read-your-writes stays exact with a per-owner *generation*: after every committed cart
write (before its answer goes out) the owner's generation is set to a new random token. A
reader fetches the token and the cached cart in one MGET and uses the cart only if it was
stored under that very token; on a miss it loads the cart from the databases and stores it
under the token it read *before* loading. A write that commits in between sets a new
token, so whatever that reader stores is never served: a cached cart's contents (lines,
quantities, prices paid, totals, version) are never stale. Random tokens rather than a
counter: a generation key that expires and starts again can never come back to a value a
live entry was stored under.

Product-derived fields (`available`, `currentPrice`, `priceChanged`) may be up to
CART_CACHE_TTL seconds old: a cached cart expires after that long, and the product
snapshots that cart writes use for their other lines are as old at most (the product a
write just changed is always read fresh, and a cart loaded for the cache reads every
product fresh, so the two ages never add up).

A miss costs one MGET and, after the load, one Redis command for its writes: one Lua
script (STORE, one EVALSHA) stores the cart entry, under the token the MGET read, together
with the snapshots of the products the load read, each key with its own SET ... EX
CART_CACHE_TTL. The snapshots come from the same fresh reads as the entry and expire with
it. Snapshots stored anywhere else (those a write or a checkout had to read) go through the
same script: one command however many there are.

A cart write's Redis work is one round trip, after its commit and before its answer
(`after_write`): one Lua script (one command, EVALSHA) sets the owner's new generation,
stores the snapshot of the product the write just changed (the products module answered it
with the hold) and returns the snapshots of the cart's other products. Only snapshots that are
missing cost more: a products read and one STORE. A write that shrinks a line gives the units back
(one products call) before that round trip, so the new generation comes that much later: the
writer's own next read is never stale, and another reader may see the cart as it was for that
long (as in the moment between any commit and its new generation).

Values are JSON (codec.py), never pickle: anyone who can write to Redis could otherwise run
code in every worker. A value that does not decode into what its key should hold is logged
and treated as a miss.

Without REDIS_URL (or with CART_CACHE_TTL=0) nothing is cached: workers share no memory, so
a per-worker copy could not see another worker's write. A Redis error is logged and the
request is served from the databases. Should Redis fail exactly while a write sets its new
generation, other workers may serve the cart as it was before that write until the entry
expires (CART_CACHE_TTL seconds at most).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from redis import Redis, RedisError

from app import metrics
from app.cart import codec
from app.cart.dto import Cart
from app.products import interface as products

logger = logging.getLogger(__name__)

# Bump the version when what is stored (the DTOs' JSON) changes shape, so old entries are
# ignored; 1 held pickles, which are never read again.
KEY_PREFIX = "storefront:cart:2:"
GENERATION_TTL = 7 * 24 * 3600  # seconds; far longer than any entry lives (see the module docstring)

# KEYS: the generation keys (ARGV[1] of them), the fresh snapshots' keys (ARGV[2]), then the
# snapshots wanted; ARGV[3], ARGV[4]: their lifetimes; then the new generations and snapshots.
AFTER_WRITE = """
local generations, fresh = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, generations do
    redis.call('SET', KEYS[i], ARGV[4 + i], 'EX', ARGV[3])
end
for i = generations + 1, generations + fresh do
    redis.call('SET', KEYS[i], ARGV[4 + i], 'EX', ARGV[4])
end
if #KEYS > generations + fresh then
    return redis.call('MGET', unpack(KEYS, generations + fresh + 1))
end
return {}
"""

# KEYS: the entries' keys; ARGV[1]: their lifetime; then their values, in the order of KEYS.
STORE = """
for i = 1, #KEYS do
    redis.call('SET', KEYS[i], ARGV[1 + i], 'EX', ARGV[1])
end
return #KEYS
"""

# The product snapshots that the cart being loaded for the cache read, per request (a worker's
# threads share the CartCache): CartCache.cart stores them with the entry; None outside a load.
_loaded_products: ContextVar[dict[str, products.Product] | None] = ContextVar("loaded_products", default=None)

T = TypeVar("T")


@dataclass(frozen=True)
class CartEntry:
    """A cached cart, and the generation it was stored under."""

    generation: str
    cart: Cart


class CartCache:
    def __init__(self, store: Redis | None, ttl: int):
        self.store = store
        self.ttl = ttl

    @classmethod
    def build(cls, redis_url: str | None, ttl: int, timeout: float) -> CartCache:
        if not redis_url or not ttl:
            return cls(None, ttl)
        client = Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, ttl)

    @functools.cached_property
    def _after_write(self):
        return self.store.register_script(AFTER_WRITE)

    @functools.cached_property
    def _store_script(self):
        return self.store.register_script(STORE)

    def cart(self, owner_id: str, load: Callable[[], tuple[Cart, bool]]) -> Cart:
        """The owner's cart, from the cache when it was stored under the current generation.

        `load` reads it from the databases and says whether the result may be cached (not
        when the products store could not be reached).
        """
        if self.store is None:
            return load()[0]
        try:
            generation, stored = self.store.mget(
                KEY_PREFIX + _generation_key(owner_id), KEY_PREFIX + _cart_key(owner_id)
            )
        except RedisError as error:
            logger.warning("cart cache unavailable, reading the databases: %s", error)
            return load()[0]
        generation = generation.decode("utf-8", "replace") if generation else ""
        entry = _decoded(CartEntry, stored, _cart_key(owner_id))
        if entry is not None and entry.generation == generation:
            metrics.CART_CACHE.labels("hit").inc()
            return entry.cart
        metrics.CART_CACHE.labels("miss").inc()
        loading = _loaded_products.set({})
        try:
            cart, cacheable = load()
            read = _loaded_products.get()
        finally:
            _loaded_products.reset(loading)
        entries = {_product_key(product_id): product for product_id, product in read.items()}
        if cacheable:
            entries[_cart_key(owner_id)] = CartEntry(generation, cart)
        if entries:
            self._quietly(lambda: self._store(entries))
        return cart

    def changed(self, *owner_ids: str) -> None:
        """Call after a cart write committed: the owners' cached carts are no longer served."""
        if self.store is None:
            return
        pipeline = self.store.pipeline(transaction=False)
        for owner_id in owner_ids:
            pipeline.set(KEY_PREFIX + _generation_key(owner_id), uuid.uuid4().hex, ex=GENERATION_TTL)
        try:
            pipeline.execute()
        except RedisError as error:
            logger.error("cart cache: could not move the generation of %s on: %s", owner_ids, error)

    def after_write(
        self, owner_ids: Collection[str], product_ids: Iterable[str], fresh: Mapping[str, products.Product]
    ) -> dict[str, products.Product] | None:
        """Call after a cart write committed, before it answers: the owners' cached carts are
        no longer served, and the answer's products come back: those in `fresh` (what the
        write's products call answered) as given, and stored as snapshots; the others from
        their snapshots, or read from the products store when they have none. One Redis
        round trip (see the module docstring); None when the products store could not be
        reached for a product that has no snapshot.
        """
        wanted = list(dict.fromkeys(product_ids))
        others = [product_id for product_id in wanted if product_id not in fresh]
        found: dict[str, products.Product] = {}
        if self.store is not None:
            keys = [KEY_PREFIX + _generation_key(owner_id) for owner_id in owner_ids]
            keys += [KEY_PREFIX + _product_key(product_id) for product_id in fresh]
            keys += [KEY_PREFIX + _product_key(product_id) for product_id in others]
            arguments = [len(owner_ids), len(fresh), GENERATION_TTL, self.ttl]
            arguments += [uuid.uuid4().hex for _ in owner_ids]
            arguments += [codec.dumps(product) for product in fresh.values()]
            try:
                snapshots = self._after_write(keys=keys, args=arguments)
            except RedisError as error:
                logger.error("cart cache: could not move the generation of %s on: %s", tuple(owner_ids), error)
                snapshots = [None] * len(others)
            found = _snapshots(others, snapshots)
        missing = [product_id for product_id in others if product_id not in found]
        if missing:
            try:
                read = _by_id(products.get_products(product_ids=missing))
            except products.ProductsUnavailable:
                return None
            found.update(read)
            if read and self.store is not None:
                self._quietly(lambda: self._store_products(read))
        found.update(fresh)
        return {product_id: found[product_id] for product_id in wanted if product_id in found}

    def products(self, product_ids: Iterable[str], fresh: Collection[str]) -> dict[str, products.Product]:
        """The current products by id (those that exist): the ids in `fresh` read from the
        products store, the others from snapshots at most `ttl` seconds old when there are any.

        Raises ProductsUnavailable as products.get_products does.
        """
        wanted = list(dict.fromkeys(product_ids))
        if self.store is None or not wanted:
            return _by_id(products.get_products(product_ids=wanted))
        cached = [product_id for product_id in wanted if product_id not in fresh]
        found: dict[str, products.Product] = {}
        if cached:
            try:
                snapshots = self.store.mget([KEY_PREFIX + _product_key(product_id) for product_id in cached])
            except RedisError as error:
                logger.warning("cart cache unavailable, reading the products store: %s", error)
                snapshots = [None] * len(cached)
            found = _snapshots(cached, snapshots)
        missing = [product_id for product_id in wanted if product_id not in found]
        if missing:
            read = _by_id(products.get_products(product_ids=missing))
            found.update(read)
            loading = _loaded_products.get()
            if loading is not None:
                loading.update(read)  # stored with the cart entry, in the same command (cart())
            elif read:
                self._quietly(lambda: self._store_products(read))
        return {product_id: found[product_id] for product_id in wanted if product_id in found}

    def _store(self, entries: Mapping[str, object]) -> None:
        """Store entries (keys without the prefix) for `ttl` seconds each: one command."""
        self._store_script(
            keys=[KEY_PREFIX + key for key in entries],
            args=[self.ttl, *(codec.dumps(value) for value in entries.values())],
        )

    def _store_products(self, read: Mapping[str, products.Product]) -> None:
        self._store({_product_key(product_id): product for product_id, product in read.items()})

    def _quietly(self, write: Callable[[], object]) -> None:
        """Filling the cache is an optimisation: a failure is logged, the answer still goes out."""
        try:
            write()
        except RedisError as error:
            logger.warning("cart cache: could not store an entry: %s", error)


def _decoded(kind: type[T], stored: bytes | None, key: str) -> T | None:
    """What the key holds, None when nothing or something that is not the JSON of `kind`."""
    if stored is None:
        return None
    try:
        return codec.loads(kind, stored)
    except codec.DecodeError as error:
        logger.warning("cart cache: ignoring %s%s, which does not decode (%s)", KEY_PREFIX, key, error)
        return None


def _snapshots(product_ids: list[str], stored: list[bytes | None]) -> dict[str, products.Product]:
    found = {}
    for product_id, value in zip(product_ids, stored, strict=True):
        snapshot = _decoded(products.Product, value, _product_key(product_id))
        if snapshot is not None:
            found[product_id] = snapshot
    return found


def _by_id(found: Iterable[products.Product]) -> dict[str, products.Product]:
    return {product.product_id: product for product in found}


def _generation_key(owner_id: str) -> str:
    return f"generation:{owner_id}"


def _cart_key(owner_id: str) -> str:
    return f"cart:{owner_id}"


def _product_key(product_id: str) -> str:
    return f"product:{product_id}"
