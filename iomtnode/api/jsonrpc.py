"""JSON-RPC 2.0 (https://www.jsonrpc.org/specification) for the client API, with no I/O.

A ``Dispatcher`` turns one websocket text message into the text to send back (or ``None``). It
knows nothing of websockets; ``iomtnode.api.server`` is the trio shell around it.

Contract of a method (an entry of a ``Methods`` table):

- an ``async`` callable whose parameters are the JSON-RPC params, by name; positional-only
  parameters and ``*args`` are refused when the table is built (``ValueError``);
- ``params`` may be an object (by name), an array (mapped onto the parameters in declaration
  order, then passed by name) or omitted; the arguments are checked against the signature before
  the call: an unexpected, missing or wrongly typed parameter is ``INVALID_PARAMS`` naming it, and
  the method is not called. Types are checked for ``str``, ``int``, ``float``, ``bool``, ``list``,
  ``dict``, ``None`` and unions of them (``list[int]`` checks ``list`` only; ``bool`` is no
  ``int``); other annotations are not checked;
- a parameter named ``conn`` (``CONN_PARAM``) is never a JSON param: it receives the ``conn``
  object given to ``handle_text`` (the server's ``Connection``, for notifications);
- it returns a JSON-serializable result, or raises ``RpcError`` for its own errors (the chain
  layer uses codes >= 1000). Any other exception is a bug: logged with its traceback
  (``rpc_method_failed``) and answered with ``INTERNAL_ERROR``.

A ``guard`` (see :mod:`iomtnode.api.access`) is asked before every call, with the bound params
and ``conn``, whether the caller may make it; it raises ``RpcError`` if not.

Every error answer (a request refused: malformed, over a limit, an unknown method, bad params,
the guard's or the method's ``RpcError``), answered or not, is told to ``refused`` (the
server's :class:`~iomtnode.api.refusals.RefusalLog` for the client's address), which counts
and logs it. A bug (``INTERNAL_ERROR``) is no refusal: it is logged as ``rpc_method_failed``.

Admin methods live in a separate table; a call needs ``params.token`` equal to the admin token
(compared in constant time) and the token is removed before the params are bound. Without an
admin token every admin call is ``UNAUTHORIZED``.

Work per message is bounded before parsing: at most ``max_request_bytes`` and
``MAX_JSON_CONTAINERS`` brackets (``TOO_MANY_ELEMENTS``), then at most ``MAX_JSON_DEPTH``
levels of nesting (``NESTED_TOO_DEEP``); each error names its limit (:mod:`.jsonwire`).

Error handling: malformed input never raises; it becomes an error response. Requests whose
structure is invalid are answered even without an id (with ``"id": null``); notifications (valid
requests without ``id``) are never answered, not even with an error.
"""

from __future__ import annotations

import hmac
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from .jsonwire import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_JSON_CONTAINERS,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    METHOD_NOT_FOUND,
    NESTED_TOO_DEEP,
    PARSE_ERROR,
    REQUEST_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    TOO_MANY_ELEMENTS,
    TOO_MANY_SUBSCRIPTIONS,
    UNAUTHORIZED,
    JsonId,
    RpcError,
    compact_json,
    encode_error,
    encode_notification,
    parse_message,
)

__all__ = [  # with the wire's names (api/jsonwire.py), which other modules import from here
    "CONN_PARAM", "INTERNAL_ERROR", "INVALID_PARAMS", "INVALID_REQUEST", "MAX_BATCH_LEN",
    "MAX_JSON_CONTAINERS", "MAX_JSON_DEPTH", "MAX_REQUEST_BYTES", "MAX_RESPONSE_BYTES",
    "METHOD_NOT_FOUND", "NESTED_TOO_DEEP", "PARSE_ERROR", "REQUEST_TOO_LARGE",
    "RESPONSE_TOO_LARGE", "TOKEN_PARAM", "TOO_MANY_ELEMENTS", "TOO_MANY_SUBSCRIPTIONS",
    "UNAUTHORIZED", "Admit", "Dispatcher", "Guard", "JsonId", "JsonParts", "Methods",
    "Refused", "RpcError", "compact_json", "encode_error", "encode_notification",
]

log = structlog.get_logger(__name__)

MAX_BATCH_LEN = 1000  # requests in one batch array
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # a batch answer; requests past it get an error each
CONN_PARAM = "conn"  # a method parameter filled by the server, never from JSON
TOKEN_PARAM = "token"  # admin methods: params.token

Methods = Mapping[str, Callable[..., Awaitable[Any]]]
# who may call: (method, bound params, conn) -> None, or raises RpcError (see api/access.py)
Guard = Callable[[str, Mapping[str, Any], Any], None]
Admit = Callable[[], Awaitable[None]]  # waits until one more request may run (a rate limit)


class Refused(Protocol):
    """Told of the refusals of one client's requests (the server's refusal log for the
    client's address, :class:`~iomtnode.api.refusals.ClientRefusals`)."""

    def __call__(self, method: str | None, error: RpcError) -> None:
        """A request calling ``method`` (None: none could be read) was refused with ``error``."""

    def transactions(self, method: str | None, refused: int, of: int, first: RpcError) -> None:
        """``refused`` of the ``of`` transactions of a batch that was answered were refused,
        the first with ``first``."""


_REQUEST_KEYS = frozenset({"jsonrpc", "method", "params", "id"})
_NO_ID = object()  # a request without "id" is a notification
_BAD_ID = "id must be a string, an integer or null"
_CHECKED_TYPES: dict[type, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (int, float), bool: (bool,), list: (list,), dict: (dict,),
    type(None): (type(None),),
}


@dataclass(frozen=True, slots=True)
class JsonParts:
    """A method's result already in JSON, as pieces that the response joins once: a large
    result (a block of 10,000 transactions) is never held as objects and text at once."""

    parts: list[str]


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits an annotation; annotations outside ``_CHECKED_TYPES`` fit all."""
    if annotation is None:
        annotation = type(None)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    accepted = _CHECKED_TYPES.get(origin or annotation)
    if accepted is None:
        return True
    return isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool))


@dataclass(frozen=True, slots=True)
class _Method:
    name: str
    fn: Callable[..., Awaitable[Any]]
    params: tuple[inspect.Parameter, ...]  # the JSON-visible parameters, in declaration order
    takes_conn: bool
    takes_any: bool  # has **kwargs
    admin: bool

    @classmethod
    def of(cls, name: str, fn: Callable[..., Awaitable[Any]], *, admin: bool) -> _Method:
        try:
            sig = inspect.signature(fn, eval_str=True)
        except NameError:  # an annotation only importable under TYPE_CHECKING: leave it unchecked
            sig = inspect.signature(fn)
        params, takes_conn, takes_any = [], False, False
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL):
                raise ValueError(f"method {name!r}: parameter {p.name!r} cannot be passed by name")
            if p.kind is p.VAR_KEYWORD:
                takes_any = True
            elif p.name == CONN_PARAM:
                takes_conn = True
            elif admin and p.name == TOKEN_PARAM:
                raise ValueError(f"admin method {name!r} must not declare {TOKEN_PARAM!r}")
            else:
                params.append(p)
        return cls(name, fn, tuple(params), takes_conn, takes_any, admin)

    def bind(self, params: list[Any] | dict[str, Any] | None) -> dict[str, Any]:
        """Keyword arguments for the call, or ``RpcError(INVALID_PARAMS)`` naming the parameter."""
        if params is None:
            given: dict[str, Any] = {}
        elif isinstance(params, list):
            if len(params) > len(self.params):
                raise RpcError(INVALID_PARAMS, f"too many positional params: got {len(params)}, "
                               f"{self.name} takes at most {len(self.params)}")
            given = {p.name: value for p, value in zip(self.params, params, strict=False)}
        else:
            given = dict(params)
            names = {p.name for p in self.params}
            for key in given:
                if key not in names and (not self.takes_any or key == CONN_PARAM):
                    raise RpcError(INVALID_PARAMS, f"unexpected parameter {key!r}")
        for p in self.params:
            if p.name not in given:
                if p.default is p.empty:
                    raise RpcError(INVALID_PARAMS, f"missing required parameter {p.name!r}")
            elif p.annotation is not p.empty and not _type_ok(given[p.name], p.annotation):
                shown = getattr(p.annotation, "__name__", None) or str(p.annotation)
                raise RpcError(INVALID_PARAMS, f"parameter {p.name!r} must be {shown}, "
                               f"got {_json_type(given[p.name])}")
        return given


class Dispatcher:
    """Answers JSON-RPC text messages from a method table and an admin method table.

    ``ValueError`` at construction if a name is in both tables or a method's signature cannot be
    called with named params (see the module docstring for the method contract). ``guard`` is
    asked before each call whether the caller may make it. Without an
    ``admin_token`` (``None`` or empty) every admin call is ``UNAUTHORIZED``.
    """

    def __init__(
        self,
        methods: Methods,
        *,
        admin_methods: Methods | None = None,
        admin_token: str | None = None,
        guard: Guard | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_batch_len: int = MAX_BATCH_LEN,
    ) -> None:
        admin_methods = admin_methods or {}
        both = sorted(set(methods) & set(admin_methods))
        if both:
            raise ValueError(f"methods in both the public and the admin table: {both}")
        self._methods = {n: _Method.of(n, fn, admin=False) for n, fn in methods.items()}
        self._methods |= {n: _Method.of(n, fn, admin=True) for n, fn in admin_methods.items()}
        self._admin_token = admin_token.encode("utf-8", "surrogatepass") if admin_token else None
        self._guard = guard
        self._max_request_bytes = max_request_bytes
        self._max_batch_len = max_batch_len

    async def handle_text(self, message: str, *, conn: Any = None, admit: Admit | None = None,
                          refused: Refused | None = None) -> str | None:
        """The compact JSON response to ``message``, or ``None`` when nothing is to be sent back.

        ``conn`` is passed to methods that declare a ``conn`` parameter. ``admit`` (the server's
        rate limit) is awaited before each request of a batch but the first, for which the
        caller has paid before handing over the message. Never raises for bad input; only
        cancellation (and ``BaseException``) propagates. Batch requests run one after the other,
        in order. ``refused`` is told of each refusal (see the module docstring).
        """
        request, error = parse_message(message, self._max_request_bytes)
        if error is None:
            if not isinstance(request, list):
                return await self._handle_one(request, conn, refused)
            error = _batch_error(len(request), self._max_batch_len)
        if error is not None:
            if refused is not None:
                refused(None, error)
            return encode_error(error)
        replies: list[str] = []
        budget = MAX_RESPONSE_BYTES
        for i, item in enumerate(request):
            if i and admit is not None:
                await admit()
            if budget <= 0:  # the rest would make the answer too big: each gets an error
                id_ = item.get("id") if isinstance(item, dict) else None
                error = RpcError(RESPONSE_TOO_LARGE, f"batch response over {MAX_RESPONSE_BYTES}"
                                 " bytes; send the rest in another batch")
                if refused is not None:
                    refused(_method_of(item), error)
                replies.append(encode_error(error, id_ if isinstance(id_, str | int)
                                            and not isinstance(id_, bool) else None))
                continue
            reply = await self._handle_one(item, conn, refused)
            if reply:
                replies.append(reply)
                budget -= len(reply)
        return f"[{','.join(replies)}]" if replies else None

    async def _handle_one(self, request: Any, conn: Any, refused: Refused | None) -> str | None:
        reason = _invalid_reason(request)
        id_ = request.get("id", _NO_ID) if isinstance(request, dict) else None
        if reason is not None:  # answered even without an id: it may not be a notification
            valid_id = reason != _BAD_ID and id_ is not _NO_ID
            invalid = RpcError(INVALID_REQUEST, f"invalid request: {reason}")
            if refused is not None:
                refused(_method_of(request), invalid)
            return encode_error(invalid, id_ if valid_id else None)
        try:
            result = await self._call(request, conn)
            response = {"jsonrpc": "2.0", "result": result, "id": id_}
        except RpcError as error:
            if refused is not None and error.code != INTERNAL_ERROR:  # a bug is logged apart
                refused(request["method"], error)
            response = {"jsonrpc": "2.0", "error": error.to_json(), "id": id_}
        if id_ is _NO_ID:
            return None
        if isinstance(response.get("result"), JsonParts):
            return "".join(['{"jsonrpc":"2.0","result":', *response.pop("result").parts,
                            ',"id":', compact_json(id_), "}"])
        try:
            return compact_json(response)
        except (TypeError, ValueError):  # bytes, NaN, ... in a result or in RpcError.data
            log.exception("rpc_method_failed", method=request["method"],
                          reason="response is not JSON-serializable")
            return encode_error(RpcError(INTERNAL_ERROR, "internal error"), id_)

    async def _call(self, request: dict[str, Any], conn: Any) -> Any:
        name = request["method"]
        method = self._methods.get(name)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {name!r}")
        params = request.get("params")
        if method.admin:  # refused: UNAUTHORIZED, logged as api_admin_refused (a warning)
            params = self._check_token(params)
        kwargs = method.bind(params)
        if self._guard is not None:
            self._guard(name, kwargs, conn)
        if method.takes_conn:
            kwargs[CONN_PARAM] = conn
        try:
            return await method.fn(**kwargs)
        except RpcError:
            raise
        except Exception:
            log.exception("rpc_method_failed", method=name)
            raise RpcError(INTERNAL_ERROR, "internal error") from None

    def _check_token(self, params: Any) -> dict[str, Any]:
        if self._admin_token is None:
            raise RpcError(UNAUTHORIZED, "unauthorized", "the admin API is disabled on this node")
        if not isinstance(params, dict) or TOKEN_PARAM not in params:
            raise RpcError(UNAUTHORIZED, "unauthorized", "params.token is missing")
        if not isinstance(params[TOKEN_PARAM], str):
            raise RpcError(UNAUTHORIZED, "unauthorized", "params.token must be a string")
        given = params[TOKEN_PARAM].encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(given, self._admin_token):
            raise RpcError(UNAUTHORIZED, "unauthorized", "params.token is wrong")
        return {k: v for k, v in params.items() if k != TOKEN_PARAM}


def _batch_error(size: int, limit: int) -> RpcError | None:
    """Why a batch of ``size`` requests is refused whole, or None."""
    if not size:
        return RpcError(INVALID_REQUEST, "invalid request: empty batch")
    if size > limit:
        return RpcError(INVALID_REQUEST, f"invalid request: batch of {size} requests, over the "
                        f"limit of {limit}")
    return None


def _method_of(request: Any) -> str | None:
    """The method a request names, if it names one."""
    method = request.get("method") if isinstance(request, dict) else None
    return method if isinstance(method, str) else None


def _invalid_reason(request: Any) -> str | None:
    """Why ``request`` is no valid request object, cheapest check first; ``None`` if it is."""
    if not isinstance(request, dict):
        return f"expected an object, got {_json_type(request)}"
    id_ = request.get("id")
    if isinstance(id_, bool) or not isinstance(id_, str | int | None):
        return _BAD_ID
    if request.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if not isinstance(request.get("method"), str):
        return "method must be a string"
    if not isinstance(request.get("params", []), list | dict):
        return "params must be an object or an array"
    extra = sorted(set(request) - _REQUEST_KEYS)
    if extra:
        return f"unexpected member {extra[0]!r}"
    return None
