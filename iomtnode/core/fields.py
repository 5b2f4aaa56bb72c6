"""Field checks for positional records: each returns the value or raises :class:`FieldError`.

Records (transactions, headers, certificates) are decoded from positional arrays; the
checks here turn "some decoded msgpack value" into "a value of the right type, size
and range", with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Mapping
from typing import Any

from .crypto import HASH_BYTES, KEY_BYTES, SIG_BYTES

U64_MAX = 2**64 - 1
IDENT_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")  # kinds, device classes, scopes


class FieldError(ValueError):
    """A record field of the wrong type, size or range."""


Check = Callable[[str, Any], Any]


def u64(name: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise FieldError(f"{name} must be an integer in [0, 2^64), got {value!r:.40}")
    return value


def boolean(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise FieldError(f"{name} must be a boolean, got {value!r:.40}")
    return value


def exact_bytes(size: int) -> Check:
    def check(name: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) != size:
            got = f"{len(value)} bytes" if type(value) is bytes else type(value).__name__
            raise FieldError(f"{name} must be {size} bytes, got {got}")
        return value

    check.byte_range = (size, size)  # type: ignore[attr-defined]  # see bytes_items
    return check


def max_bytes(limit: int) -> Check:
    def check(name: str, value: Any) -> bytes:
        if type(value) is not bytes:
            raise FieldError(f"{name} must be bytes, got {type(value).__name__}")
        if len(value) > limit:
            raise FieldError(f"{name} is {len(value)} bytes, more than the limit of {limit}")
        return value

    check.byte_range = (0, limit)  # type: ignore[attr-defined]  # see bytes_items
    return check


def bytes_items(check: Check, items: list[Any]) -> bool:
    """Whether every item passes ``check``, a check of byte strings (:func:`exact_bytes`,
    :func:`max_bytes`), tested in C loops: a batch of thousands of transactions or ids is
    checked at once, and only one that fails is walked item by item, for the reason."""
    low, high = check.byte_range  # type: ignore[attr-defined]
    if not items:
        return True
    if set(map(type, items)) != {bytes}:
        return False
    sizes = set(map(len, items))
    return low <= min(sizes) and max(sizes) <= high


def text(limit: int) -> Check:
    def check(name: str, value: Any) -> str:
        if type(value) is not str:
            raise FieldError(f"{name} must be a string, got {type(value).__name__}")
        if len(value.encode()) > limit:
            raise FieldError(f"{name} is longer than {limit} bytes")
        return value

    return check


def ident(name: str, value: Any) -> str:
    if type(value) is not str or not IDENT_RE.fullmatch(value):
        raise FieldError(f"{name} must match {IDENT_RE.pattern}, got {value!r:.40}")
    return value


def optional_hash(name: str, value: Any) -> bytes:
    if type(value) is not bytes or len(value) not in (0, HASH_BYTES):
        raise FieldError(f"{name} must be empty or {HASH_BYTES} bytes")
    return value


key = exact_bytes(KEY_BYTES)
digest = exact_bytes(HASH_BYTES)
signature = exact_bytes(SIG_BYTES)


def size_class(name: str, value: Any) -> int:
    """A sealed payload's size class: 0, 1 or 2 (see :mod:`.payload`)."""
    if type(value) is not int or not 0 <= value <= 2:
        raise FieldError(f"{name} must be a size class 0, 1 or 2, got {value!r:.40}")
    return value


def sorted_keys(limit: int) -> Check:
    """A list of at most ``limit`` distinct keys in ascending order (one encoding per set)."""
    def check(name: str, value: Any) -> list[bytes]:
        if type(value) is not list or len(value) > limit:
            raise FieldError(f"{name} must be an array of at most {limit} keys")
        for item in value:
            key(f"{name}[]", item)
        if any(a >= b for a, b in itertools.pairwise(value)):
            raise FieldError(f"{name} must be in ascending order without repeats")
        return value

    return check


_LAYOUTS: dict[type[Any], tuple[tuple[Check, str], ...]] = {}


def _layout(cls: type[Any], name: str) -> tuple[tuple[Check, str], ...]:
    """(check, "kind.field") per field of ``cls``, computed once (this is a hot path)."""
    layout = _LAYOUTS.get(cls)
    if layout is None:
        names = getattr(cls, "__struct_fields__", None) or [
            fld.name for fld in dataclasses.fields(cls)]  # a msgspec Struct or a dataclass
        layout = tuple((check, f"{name}.{field}")
                       for check, field in zip(cls.CHECKS, names, strict=True))
        _LAYOUTS[cls] = layout
    return layout


def tagged_record(value: Any, types: Mapping[int, type[Any]], what: str,
                  name_of: Callable[[type[Any]], str] = lambda cls: cls.__name__) -> Any:
    """Build the record ``[KIND, field, ...]`` of the class ``types[KIND]``, checking each
    field with the class's ``CHECKS`` (one per field, in order)."""
    if type(value) is not list or not value or type(value[0]) is not int:
        raise FieldError(f"a {what} must be an array starting with its kind")
    cls = types.get(value[0])
    if cls is None:
        raise FieldError(f"unknown {what} kind {value[0]}")
    layout = _layout(cls, name_of(cls))
    if len(value) - 1 != len(layout):
        raise FieldError(f"{name_of(cls)} has {len(layout)} fields, got {len(value) - 1}")
    for (check, name), arg in zip(layout, value[1:]):  # noqa: B905 - lengths checked above
        check(name, arg)
    return cls(*value[1:])


def record(name: str, value: Any, arity: int) -> list[Any]:
    """Check that ``value`` is a positional record (a list) of exactly ``arity`` items."""
    if type(value) is not list:
        raise FieldError(f"{name} must be an array, got {type(value).__name__}")
    if len(value) != arity:
        raise FieldError(f"{name} must have {arity} fields, got {len(value)}")
    return value
