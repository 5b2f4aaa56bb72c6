"""JSON-RPC 2.0 on the wire: the error codes, the error type, compact encoding, and parsing
one text message with its work bounded before the parser runs.

No I/O; :mod:`iomtnode.api.jsonrpc` (which re-exports these names) answers the messages.
"""

from __future__ import annotations

import json
from itertools import compress
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_TOO_LARGE = -32001  # server-defined: the text is over max_request_bytes
UNAUTHORIZED = -32004  # server-defined: admin method without the right params.token
RESPONSE_TOO_LARGE = -32005  # server-defined: a batch whose answers would exceed the budget
TOO_MANY_SUBSCRIPTIONS = -32010  # server-defined: the connection holds its limit of them
TOO_MANY_ELEMENTS = -32011  # server-defined: a message holds more values than its limit
NESTED_TOO_DEEP = -32012  # server-defined: arrays/objects nested deeper than the limit

MAX_REQUEST_BYTES = 1024 * 1024  # one JSON-RPC text message, in UTF-8 bytes
MAX_JSON_CONTAINERS = 10_000  # '[' and '{' in one text message (counted in strings too), so
# parsing builds at most this many arrays and objects (a full batch needs about 3 per request)
MAX_JSON_DEPTH = 16  # arrays and objects nested in one message (a batch needs 4)

JsonId = str | int | None
_CONTAINERS = frozenset((list, dict))


class RpcError(Exception):
    """A JSON-RPC error response: ``code``, ``message`` and optional JSON-serializable ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The ``error`` member of a response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def compact_json(value: Any) -> str:
    # ASCII only: a lone surrogate (valid in a JSON string escape) cannot be encoded as UTF-8
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def encode_error(error: RpcError, id: JsonId = None) -> str:
    """A compact error response."""
    return compact_json({"jsonrpc": "2.0", "error": error.to_json(), "id": id})


def encode_notification(method: str, params: Any) -> str:
    """A compact notification (a request without id), as the server pushes to subscribers."""
    return compact_json({"jsonrpc": "2.0", "method": method, "params": params})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_message(message: str, max_bytes: int) -> tuple[Any, RpcError | None]:
    """The JSON value of ``message``, or the error that refuses it; the limits are checked
    before the parser runs (size, brackets) and after it (depth), cheapest first."""
    size = len(message.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return None, RpcError(REQUEST_TOO_LARGE,
            f"request is {size} bytes, over the limit of {max_bytes} bytes",
            {"size": size, "limit": max_bytes})
    containers = message.count("[") + message.count("{")  # C speed; an upper bound
    if containers > MAX_JSON_CONTAINERS:
        return None, RpcError(TOO_MANY_ELEMENTS,
            f"request holds {containers} '[' and '{{', over the limit of {MAX_JSON_CONTAINERS} "
            "arrays and objects", {"count": containers, "limit": MAX_JSON_CONTAINERS})
    too_deep = RpcError(NESTED_TOO_DEEP, f"request nests arrays and objects deeper than the "
                        f"limit of {MAX_JSON_DEPTH}", {"limit": MAX_JSON_DEPTH})
    try:
        request = json.loads(message, parse_constant=_reject_constant)
    except RecursionError:  # deeper than the interpreter's recursion limit
        return None, too_deep
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, ints over the digit limit
        return None, RpcError(PARSE_ERROR, f"parse error: {exc}")
    if containers > MAX_JSON_DEPTH and _depth_over(request, MAX_JSON_DEPTH):
        return None, too_deep
    return request, None


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts deeper than ``limit``. Python code runs once
    per container (at most ``MAX_JSON_CONTAINERS``); scalars are skipped in C loops."""
    stack = [(value, 1)] if type(value) in _CONTAINERS else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        kids = list(compress(children, map(_CONTAINERS.__contains__, map(type, children))))
        if kids:
            if depth >= limit:
                return True
            stack.extend((kid, depth + 1) for kid in kids)
    return False
