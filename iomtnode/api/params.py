"""Checking JSON-RPC parameters that carry bytes as hex."""

from __future__ import annotations

from typing import Any

from .jsonrpc import INVALID_PARAMS, RpcError


def hex_param(name: str, value: Any, size: int | None = None) -> bytes:
    """``value`` as bytes, or an INVALID_PARAMS error naming ``name``."""
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, f"{name} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"{name} is not valid hex") from None
    if size is not None and len(raw) != size:
        raise RpcError(INVALID_PARAMS, f"{name} must be {size} bytes ({2 * size} hex digits)")
    return raw
