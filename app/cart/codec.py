"""JSON for what the cart cache keeps in Redis (frozen dataclasses), never pickle.

Whoever can write to Redis can put any bytes under a cache key; decoding JSON into a known
dataclass can at worst fail (a miss), whereas unpickling would run the writer's code in the
worker. The field types the cached DTOs use round-trip exactly: Decimal as its string (the
exponent kept: "4.00" stays "4.00"), datetime as ISO 8601 with its offset and microseconds,
tuples as arrays, `X | None` as null, nested dataclasses as objects keyed by field name.
Anything else, or a value that does not match its field's type, raises DecodeError.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

T = TypeVar("T")


class DecodeError(ValueError):
    """The bytes are not the JSON of the expected dataclass."""


def dumps(value: object) -> bytes:
    return json.dumps(_to_json(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads(cls: type[T], data: bytes | str) -> T:
    try:
        return _decoder(cls)(json.loads(data))
    except DecodeError:
        raise
    except (ValueError, TypeError, KeyError, InvalidOperation, RecursionError) as error:
        raise DecodeError(f"not a {cls.__name__}: {error}") from None


def _to_json(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    raise TypeError(f"the cart cache cannot store a {type(value).__name__}")


@functools.cache
def _decoder(kind: Any) -> Callable[[Any], Any]:
    """A function from the JSON of `kind` to a `kind`, built once per type (a cache hit decodes
    a cart on every GET /v1/cart)."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        if len(options) != 1:
            raise TypeError(f"the cart cache cannot decode {kind}")
        decode = _decoder(options[0])
        return lambda raw: None if raw is None else decode(raw)
    if origin is tuple:
        item_type, ellipsis = typing.get_args(kind)
        if ellipsis is not Ellipsis:
            raise TypeError(f"the cart cache cannot decode {kind}")
        decode_item = _decoder(item_type)

        def decode_tuple(raw: Any) -> tuple:
            if type(raw) is not list:
                raise DecodeError(f"expected an array, got {raw!r:.40}")
            return tuple(map(decode_item, raw))

        return decode_tuple
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        decoders = {field.name: _decoder(hints[field.name]) for field in dataclasses.fields(kind)}
        names = decoders.keys()

        def decode_dataclass(raw: Any) -> Any:
            if type(raw) is not dict or raw.keys() != names:
                raise DecodeError(f"expected the fields of {kind.__name__}")
            return kind(**{name: decode(raw[name]) for name, decode in decoders.items()})

        return decode_dataclass
    if kind is Decimal:
        return _typed(str, Decimal)
    if kind is datetime:
        return _typed(str, datetime.fromisoformat)
    if kind in (bool, int, str):
        return _typed(kind, None)
    raise TypeError(f"the cart cache cannot decode {kind}")


def _typed(json_type: type, convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """Accepts exactly `json_type` (a bool is no int), then converts it."""

    def decode(raw: Any) -> Any:
        if type(raw) is not json_type:
            raise DecodeError(f"expected {json_type.__name__}, got {raw!r:.40}")
        return raw if convert is None else convert(raw)

    return decode
