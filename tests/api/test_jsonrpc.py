"""The JSON-RPC core without I/O: request validation, params binding, batches, admin tokens."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from iomtnode.api.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BATCH_LEN,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    METHOD_NOT_FOUND,
    NESTED_TOO_DEEP,
    PARSE_ERROR,
    REQUEST_TOO_LARGE,
    TOO_MANY_ELEMENTS,
    UNAUTHORIZED,
    Dispatcher,
    RpcError,
    encode_notification,
)
from iomtnode.api.refusals import RefusalLog

ADMIN_TOKEN = "s3cret-admin-token"


async def echo(value: Any) -> Any:
    return value


async def add(a: int, b: int = 0) -> int:
    return a + b


async def describe(name: str, height: int | None = None, scale: float = 1.0, flag: bool = False,
                   tags: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "height": height, "scale": scale, "flag": flag, "tags": tags}


async def stale() -> None:
    raise RpcError(1042, "stale sequence number", {"expected": 5, "got": 3})


async def buggy() -> None:
    raise KeyError("a bug")


async def returns_bytes() -> bytes:
    return b"\x00"


async def whoami(conn: Any, greeting: str = "hi") -> str:
    return f"{greeting} {conn}"


async def anything(**params: Any) -> dict[str, Any]:
    return params


async def ban_peer(peer: str, hours: int = 1) -> str:
    return f"banned {peer} for {hours}h"


METHODS = {"echo": echo, "add": add, "describe": describe, "stale": stale, "buggy": buggy,
           "returns_bytes": returns_bytes, "whoami": whoami, "anything": anything}


@pytest.fixture
def rpc() -> Dispatcher:
    return Dispatcher(METHODS, admin_methods={"ban_peer": ban_peer}, admin_token=ADMIN_TOKEN)


async def answer(rpc: Dispatcher, request: Any, *, conn: Any = None) -> Any:
    text = request if isinstance(request, str) else json.dumps(request)
    reply = await rpc.handle_text(text, conn=conn)
    return None if reply is None else json.loads(reply)


def req(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        request["params"] = params
    return request


def error_of(reply: dict[str, Any], code: int, id: Any = 1) -> str:
    """Asserts ``reply`` is an error response with ``code`` and ``id``; returns its message."""
    assert reply["jsonrpc"] == "2.0"
    assert "result" not in reply
    assert reply["id"] == id
    assert reply["error"]["code"] == code, reply
    return reply["error"]["message"]


async def test_result_round_trip_and_compact_text(rpc):
    text = await rpc.handle_text(json.dumps(req("add", {"a": 2, "b": 3}, id="x")))
    assert text == '{"jsonrpc":"2.0","result":5,"id":"x"}'
    assert await answer(rpc, req("echo", {"value": "ßpO₂"}, id=None)) == {
        "jsonrpc": "2.0", "result": "ßpO₂", "id": None}
    # a lone surrogate is valid JSON but no UTF-8: it must come back escaped
    text = await rpc.handle_text('{"jsonrpc":"2.0","id":1,"method":"echo","params":["\\ud800"]}')
    assert text == '{"jsonrpc":"2.0","result":"\\ud800","id":1}'
    text.encode()


@pytest.mark.parametrize(("text", "code", "id", "fragment"), [
    # not JSON at all, with the parser's own message
    ('{"jsonrpc": "2.0", "method": ', PARSE_ERROR, None, "Expecting value"),
    # NaN is a Python extension, not JSON
    ('{"jsonrpc":"2.0","id":1,"method":"echo","params":[NaN]}', PARSE_ERROR, None, "NaN"),
    # more brackets than MAX_JSON_CONTAINERS: refused before the parser runs
    ("[" * 200_000, TOO_MANY_ELEMENTS, None, "over the limit of 10000 arrays and objects"),
    ('{"a":' * 12_000 + "1" + "}" * 12_000, TOO_MANY_ELEMENTS, None, "over the limit of 10000"),
    # deeper than MAX_JSON_DEPTH, though few brackets (and deeper than the recursion limit)
    ("[" * 17 + "]" * 17, NESTED_TOO_DEEP, None, "deeper than the limit of 16"),
    ('{"jsonrpc":"2.0","id":1,"method":"echo","params":[' + "[" * 16 + "]" * 16 + "]}",
     NESTED_TOO_DEEP, None, "deeper than the limit of 16"),
    ("[" * 5_000 + "]" * 5_000, NESTED_TOO_DEEP, None, "deeper than the limit of 16"),
    ('"just a string"', INVALID_REQUEST, None, "expected an object, got string"),
    ("42", INVALID_REQUEST, None, "expected an object, got integer"),
    ('{"jsonrpc":"1.0","id":1,"method":"echo"}', INVALID_REQUEST, 1, 'jsonrpc must be "2.0"'),
    ('{"id":"a","method":"echo"}', INVALID_REQUEST, "a", 'jsonrpc must be "2.0"'),
    ('{"jsonrpc":"2.0","id":1,"method":7}', INVALID_REQUEST, 1, "method must be a string"),
    ('{"jsonrpc":"2.0","id":1}', INVALID_REQUEST, 1, "method must be a string"),
    ('{"jsonrpc":"2.0","id":1,"method":"echo","params":"x"}', INVALID_REQUEST, 1,
     "params must be an object or an array"),
    ('{"jsonrpc":"2.0","id":1,"method":"echo","param":{}}', INVALID_REQUEST, 1,
     "unexpected member 'param'"),
    # an invalid id cannot be echoed
    ('{"jsonrpc":"2.0","id":[1],"method":"echo"}', INVALID_REQUEST, None, "id must be"),
    ('{"jsonrpc":"2.0","id":true,"method":"echo"}', INVALID_REQUEST, None, "id must be"),
    ('{"jsonrpc":"2.0","id":1.5,"method":"echo"}', INVALID_REQUEST, None, "id must be"),
])
async def test_bad_requests_are_answered_with_their_id_or_null(rpc, text, code, id, fragment):
    assert fragment in error_of(await answer(rpc, text), code, id=id)


async def test_nesting_up_to_the_depth_limit_is_accepted(rpc):
    # the params array is at depth 2 inside the request object: 14 more levels fit
    nested: list[object] = []
    for _ in range(MAX_JSON_DEPTH - 3):
        nested = [nested]
    assert (await answer(rpc, req("echo", [nested])))["result"] == nested


async def test_each_request_of_a_batch_but_the_first_is_admitted(rpc):
    admitted = []

    async def admit() -> None:
        admitted.append(1)

    batch = json.dumps([req("add", [i], id=i) for i in range(5)])
    assert len(json.loads(await rpc.handle_text(batch, admit=admit))) == 5
    assert len(admitted) == 4  # the caller paid for the first before handing the message over


async def test_invalid_request_without_id_is_still_answered(rpc):
    # it may not be a notification at all, so the client needs to hear about it
    reply = await answer(rpc, {"jsonrpc": "2.0", "method": 5})
    assert "method must be a string" in error_of(reply, INVALID_REQUEST, id=None)


async def test_unknown_method_names_the_method(rpc):
    message = error_of(await answer(rpc, req("no_such_thing")), METHOD_NOT_FOUND)
    assert "'no_such_thing'" in message


@pytest.mark.parametrize(("method", "params", "fragment"), [
    ("add", {}, "missing required parameter 'a'"),  # missing, by name
    ("add", None, "missing required parameter 'a'"),  # params omitted
    ("add", [], "missing required parameter 'a'"),  # missing, by position
    ("add", {"a": 1, "c": 2}, "unexpected parameter 'c'"),  # extra
    ("add", [1, 2, 3], "too many positional params: got 3"),  # extra, by position
    ("add", {"a": "1"}, "parameter 'a' must be int, got string"),  # wrong type
    ("add", {"a": True}, "parameter 'a' must be int, got boolean"),  # a bool is no int
    ("add", {"a": 1.5}, "parameter 'a' must be int, got number"),
    ("describe", {"name": 1}, "parameter 'name' must be str, got integer"),
    ("describe", {"name": "n", "height": "3"}, "parameter 'height' must be int | None"),
    ("describe", {"name": "n", "flag": 1}, "parameter 'flag' must be bool"),
    ("describe", {"name": "n", "tags": "a"}, "parameter 'tags' must be list[str] | None"),
    ("whoami", {"conn": "forged"}, "unexpected parameter 'conn'"),  # server-only parameter
    ("anything", {"conn": "forged"}, "unexpected parameter 'conn'"),  # even with **params
])
async def test_bad_params_name_the_parameter_and_never_call_the_method(method, params, fragment):
    calls: list[str] = []

    def recorded(fn: Any) -> Any:
        @functools.wraps(fn)  # keeps the signature the dispatcher inspects
        async def wrapper(**kwargs: Any) -> Any:
            calls.append(fn.__name__)
            return await fn(**kwargs)
        return wrapper

    rpc = Dispatcher({name: recorded(fn) for name, fn in METHODS.items()})
    assert fragment in error_of(await answer(rpc, req(method, params)), INVALID_PARAMS)
    assert calls == []
    await answer(rpc, req("add", [1]))  # the spy does see good calls
    assert calls == ["add"]


async def test_params_by_name_by_position_and_defaults(rpc):
    assert (await answer(rpc, req("add", [2, 3])))["result"] == 5
    assert (await answer(rpc, req("add", [2])))["result"] == 2
    assert (await answer(rpc, req("add", {"b": 1, "a": 4})))["result"] == 5
    result = (await answer(rpc, req("describe", {"name": "n", "height": None, "scale": 2})))
    assert result["result"] == {"name": "n", "height": None, "scale": 2, "flag": False,
                                "tags": None}
    assert (await answer(rpc, req("anything", {"x": 1})))["result"] == {"x": 1}


async def test_conn_is_passed_to_methods_that_declare_it(rpc):
    assert (await answer(rpc, req("whoami"), conn="conn-7"))["result"] == "hi conn-7"
    assert (await answer(rpc, req("whoami", ["yo"]), conn="c"))["result"] == "yo c"


async def test_notifications_get_no_reply_even_on_error(rpc):
    assert await rpc.handle_text('{"jsonrpc":"2.0","method":"add","params":[1]}') is None
    assert await rpc.handle_text('{"jsonrpc":"2.0","method":"nope"}') is None
    assert await rpc.handle_text('{"jsonrpc":"2.0","method":"add","params":{"z":1}}') is None
    assert await rpc.handle_text('{"jsonrpc":"2.0","method":"stale"}') is None


async def test_batch_mixed_with_errors_answers_each_non_notification_in_order(rpc):
    batch = [
        req("add", [1, 2], id=1),
        {"jsonrpc": "2.0", "method": "add", "params": [5]},  # notification: no reply
        req("nope", id=2),
        42,  # not a request object
        req("add", {"x": 1}, id=3),
        req("stale", id=4),
        req("echo", ["last"], id=5),
    ]
    replies = await answer(rpc, batch)
    assert [r["id"] for r in replies] == [1, 2, None, 3, 4, 5]
    assert replies[0]["result"] == 3
    error_of(replies[1], METHOD_NOT_FOUND, id=2)
    error_of(replies[2], INVALID_REQUEST, id=None)
    error_of(replies[3], INVALID_PARAMS, id=3)
    error_of(replies[4], 1042, id=4)
    assert replies[5]["result"] == "last"


async def test_empty_batch_is_invalid(rpc):
    assert "empty batch" in error_of(await answer(rpc, "[]"), INVALID_REQUEST, id=None)


async def test_batch_of_only_notifications_gets_no_reply(rpc):
    batch = [{"jsonrpc": "2.0", "method": "add", "params": [1]}] * 3
    assert await rpc.handle_text(json.dumps(batch)) is None


async def test_batch_over_the_limit_is_refused_whole(rpc):
    batch = [req("add", [1], id=i) for i in range(MAX_BATCH_LEN + 1)]
    message = error_of(await answer(rpc, batch), INVALID_REQUEST, id=None)
    assert str(MAX_BATCH_LEN + 1) in message and str(MAX_BATCH_LEN) in message
    assert len(await answer(rpc, batch[:MAX_BATCH_LEN])) == MAX_BATCH_LEN


async def test_oversized_request_counts_utf8_bytes(rpc):
    ascii_text = json.dumps(req("echo", ["x" * MAX_REQUEST_BYTES]))
    reply = await answer(rpc, ascii_text)
    message = error_of(reply, REQUEST_TOO_LARGE, id=None)
    assert str(len(ascii_text)) in message and str(MAX_REQUEST_BYTES) in message
    assert reply["error"]["data"] == {"size": len(ascii_text), "limit": MAX_REQUEST_BYTES}
    # fewer characters than the limit, but two bytes each in UTF-8
    text = json.dumps(req("echo", ["é" * (MAX_REQUEST_BYTES // 2)]), ensure_ascii=False)
    assert len(text) < MAX_REQUEST_BYTES
    error_of(await answer(rpc, text), REQUEST_TOO_LARGE, id=None)
    # just under the limit is fine
    fits = json.dumps(req("echo", ["x" * (MAX_REQUEST_BYTES - 100)]))
    assert (await answer(rpc, fits))["result"] == "x" * (MAX_REQUEST_BYTES - 100)


async def test_rpc_error_from_a_method_passes_through(rpc):
    reply = await answer(rpc, req("stale", id="s"))
    assert reply["error"] == {"code": 1042, "message": "stale sequence number",
                              "data": {"expected": 5, "got": 3}}
    assert reply["id"] == "s"


async def test_a_bug_in_a_method_is_logged_and_answered_as_internal_error(rpc):
    with capture_logs() as logs:
        reply = await answer(rpc, req("buggy", id=9))
    assert error_of(reply, INTERNAL_ERROR, id=9) == "internal error"
    assert "a bug" not in json.dumps(reply)  # internals are not leaked to the client
    [entry] = [e for e in logs if e["event"] == "rpc_method_failed"]
    assert entry["method"] == "buggy" and entry["exc_info"] is True
    # the dispatcher carries on
    assert (await answer(rpc, req("add", [1])))["result"] == 1


async def test_an_unserializable_result_or_error_data_is_an_internal_error(rpc):
    async def bad_data() -> None:
        raise RpcError(1001, "refused", b"bytes are no JSON")

    rpc = Dispatcher(METHODS | {"bad_data": bad_data})
    for method in ("returns_bytes", "bad_data"):
        with capture_logs() as logs:
            error_of(await answer(rpc, req(method)), INTERNAL_ERROR)
        assert [(e["event"], e["method"]) for e in logs] == [("rpc_method_failed", method)]


@pytest.mark.parametrize(("params", "reason"), [
    ({"peer": "p"}, "params.token is missing"),
    (["p"], "params.token is missing"),
    ({"peer": "p", "token": 12345}, "params.token must be a string"),  # there, of a wrong type
    ({"peer": "p", "token": None}, "params.token must be a string"),
    ({"peer": "p", "token": "wrong"}, "params.token is wrong"),
    ({"peer": "p", "token": ADMIN_TOKEN + "x"}, "params.token is wrong"),
    ({"peer": "p", "token": "ünïcode"}, "params.token is wrong"),
    ({"peer": "p", "token": "\ud800"}, "params.token is wrong"),  # a lone surrogate
])
async def test_admin_method_without_the_right_token_is_unauthorized(rpc, params, reason):
    refusals = RefusalLog()
    with capture_logs() as logs:
        reply = json.loads(await rpc.handle_text(
            json.dumps(req("ban_peer", params)),
            refused=refusals.client("192.0.2.7")))
    assert error_of(reply, UNAUTHORIZED) == "unauthorized"
    assert reply["error"]["data"] == reason
    assert [(e["event"], e["log_level"], e["method"], e["reason"], e["address"]) for e in logs
            ] == [("api_admin_refused", "warning", "ban_peer", reason, "192.0.2.7")]
    assert "s3cret" not in repr(logs)  # the operator sees each try, never a token


async def test_admin_method_with_the_right_token_runs_without_it(rpc):
    reply = await answer(rpc, req("ban_peer", {"peer": "p", "hours": 2, "token": ADMIN_TOKEN}))
    assert reply["result"] == "banned p for 2h"
    # params are still checked once the token is removed
    reply = await answer(rpc, req("ban_peer", {"token": ADMIN_TOKEN}))
    assert "missing required parameter 'peer'" in error_of(reply, INVALID_PARAMS)


async def test_admin_methods_are_disabled_without_a_token():
    rpc = Dispatcher(METHODS, admin_methods={"ban_peer": ban_peer})
    reply = await answer(rpc, req("ban_peer", {"peer": "p", "token": ""}))
    assert error_of(reply, UNAUTHORIZED) == "unauthorized"


def test_method_tables_are_checked_when_built():
    async def positional_only(a: int, /) -> None: ...

    async def star_args(*values: int) -> None: ...

    async def declares_token(token: str) -> None: ...

    with pytest.raises(ValueError, match="'a' cannot be passed by name"):
        Dispatcher({"m": positional_only})
    with pytest.raises(ValueError, match="'values'"):
        Dispatcher({"m": star_args})
    with pytest.raises(ValueError, match="must not declare 'token'"):
        Dispatcher({}, admin_methods={"m": declares_token})
    with pytest.raises(ValueError, match="both"):
        Dispatcher({"echo": echo}, admin_methods={"echo": echo})


def test_encode_notification_is_compact():
    assert encode_notification("block", {"height": 3}) == (
        '{"jsonrpc":"2.0","method":"block","params":{"height":3}}')


async def test_annotations_that_do_not_resolve_are_left_unchecked():
    async def subscribe(conn: NotImportedHere, what: str) -> str:  # noqa: F821
        return what

    rpc = Dispatcher({"subscribe": subscribe})
    assert (await answer(rpc, req("subscribe", {"what": 5})))["result"] == 5
    assert "'what'" in error_of(await answer(rpc, req("subscribe")), INVALID_PARAMS)
