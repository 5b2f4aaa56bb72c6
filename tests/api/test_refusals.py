"""Every refused request is logged once on the node, with its method, code, reason and the
client's address key, and the lines are bounded per address (api/refusals.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs
from trio_websocket import open_websocket_url

from iomtnode.api.access import NO_CONSENT, Access, Role, consent
from iomtnode.api.auth import BAD_AUTH_SIGNATURE, FORBIDDEN, NO_CHALLENGE, AuthApi, ConnectionAuth
from iomtnode.api.binary import FrameError
from iomtnode.api.connection import Connection, ConnectionLimits
from iomtnode.api.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BATCH_LEN,
    MAX_JSON_CONTAINERS,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    METHOD_NOT_FOUND,
    NESTED_TOO_DEEP,
    PARSE_ERROR,
    REQUEST_TOO_LARGE,
    TOO_MANY_ELEMENTS,
    TOO_MANY_SUBSCRIPTIONS,
    UNAUTHORIZED,
    Dispatcher,
    RpcError,
)
from iomtnode.api.methods import NOT_FOUND, TX_DROPPED
from iomtnode.api.refusals import (
    MAX_METHOD_CHARS,
    MAX_REASON_CHARS,
    OTHER_ADDRESSES,
    REFUSAL_LINES_PER_WINDOW,
    REFUSAL_WINDOW_S,
    RefusalLog,
)
from iomtnode.api.server import ApiServer, ApiServerConfig
from iomtnode.core import codec
from iomtnode.core.crypto import SigningKey
from iomtnode.core.errors import StaleSequenceError, UnknownDeviceError

from .test_client_api import make_api, reading

ADDRESS = "192.0.2.7"  # the client's address key, as api/connection.py makes it
TOKEN = "s3cret-admin-token"
KEY = b"\x05" * 32  # a key a client names in its params: never in a line
FIELDS = ("event", "log_level", "method", "code", "reason", "address")


class Conn:
    """A connection as the methods below see it: proven keys, an auth state, a close."""

    def __init__(self) -> None:
        self.proven_keys: frozenset[bytes] = frozenset()
        self.auth = ConnectionAuth(b"")

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        pass


class Ledger:
    def authorities(self) -> tuple[bytes, ...]:
        return (b"\x03" * 32,)

    def device(self, key: bytes) -> None:
        return None

    def known_stream(self, key: bytes) -> bool:
        return False


async def add(a: int, b: int = 0) -> int:
    return a + b


async def get_device(id: str) -> dict[str, Any]:
    return {"id": id}


async def get_records(stream: str, conn: Conn) -> list[Any]:  # as api/records.py asks
    consent(bytes.fromhex(stream), False, {}, conn.proven_keys, 0)
    return []


async def get_receipt(id: str) -> None:
    raise RpcError(NOT_FOUND, "no committed transaction with this id")


async def submit_reading(tx: str) -> None:  # as admission refuses it (core/state.py's words)
    raise RpcError(StaleSequenceError.code,
                   f"device {KEY.hex()[:16]}: sequence number 3 is below the window")


async def subscribe(conn: Connection) -> str:
    conn.check_subscription_room()
    return "never"


async def buggy() -> None:
    raise KeyError("a bug")


async def admin_peers() -> list[str]:
    return []


def dispatcher() -> Dispatcher:
    auth = AuthApi("test-chain", lambda key: False)
    methods = {"add": add, "get_device": get_device, "get_records": get_records,
               "get_receipt": get_receipt, "submit_reading": submit_reading,
               "subscribe": subscribe, "buggy": buggy} | auth.methods()
    roles = dict.fromkeys(methods, Role.PUBLIC) | {"get_device": Role.PARTY,
                                                   "get_records": Role.CONSENT,
                                                   "admin_peers": Role.ADMIN}
    access = Access(roles, methods, ["admin_peers"], Ledger())
    return Dispatcher(methods, admin_methods={"admin_peers": admin_peers}, admin_token=TOKEN,
                      guard=access.check)


def req(method: str, params: Any = None, **extra: Any) -> str:
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1} | extra
    if params is not None:
        request["params"] = params
    return json.dumps(request)


def lines(logs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(e.get(f) for f in FIELDS) for e in logs]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


TOO_LARGE = req("add", {"a": 1, "pad": "x" * MAX_REQUEST_BYTES})

# (what the client sends, the code it gets, the method logged, the level, the reason logged)
CASES = [
    pytest.param("{not json", PARSE_ERROR, None, "info",
                 "parse error: Expecting property name enclosed in double quotes: line 1 "
                 "column 2 (char 1)", id="parse error"),
    pytest.param('{"jsonrpc":"1.0","method":"add","id":1}', INVALID_REQUEST, "add", "info",
                 'invalid request: jsonrpc must be "2.0"', id="invalid request"),
    pytest.param("[]", INVALID_REQUEST, None, "info", "invalid request: empty batch",
                 id="empty batch"),
    pytest.param(json.dumps([1] * (MAX_BATCH_LEN + 1)), INVALID_REQUEST, None, "info",
                 f"invalid request: batch of {MAX_BATCH_LEN + 1} requests, over the limit of "
                 f"{MAX_BATCH_LEN}", id="batch too long"),
    pytest.param(req("nope"), METHOD_NOT_FOUND, "nope", "info", "method not found: 'nope'",
                 id="unknown method"),
    pytest.param(req("add", {"a": "x"}), INVALID_PARAMS, "add", "info",
                 "parameter 'a' must be int, got string", id="bad params"),
    pytest.param(TOO_LARGE, REQUEST_TOO_LARGE, None, "info", f"request is {len(TOO_LARGE)} "
                 f"bytes, over the limit of {MAX_REQUEST_BYTES} bytes", id="too large"),
    pytest.param("[" * (MAX_JSON_CONTAINERS + 1), TOO_MANY_ELEMENTS, None, "info",
                 f"request holds {MAX_JSON_CONTAINERS + 1} '[' and '{{', over the limit of "
                 f"{MAX_JSON_CONTAINERS} arrays and objects", id="too many elements"),
    pytest.param(nested(MAX_JSON_DEPTH + 1), NESTED_TOO_DEEP, None, "info",
                 f"request nests arrays and objects deeper than the limit of {MAX_JSON_DEPTH}",
                 id="nested too deep"),
    pytest.param(req("get_device", {"id": KEY.hex()}), FORBIDDEN, "get_device", "warning",
                 None, id="access denied"),
    pytest.param(req("get_records", {"stream": KEY.hex()}), NO_CONSENT, "get_records",
                 "warning", "no consent for this stream", id="no consent"),
    pytest.param(req("admin_peers", {"token": "wrong"}), UNAUTHORIZED, "admin_peers", "warning",
                 "params.token is wrong", id="admin token"),
    pytest.param(req("authenticate", {"public_key": KEY.hex(), "signature": "00" * 64}),
                 NO_CHALLENGE, "authenticate", "info", None, id="no challenge"),
    pytest.param(req("subscribe"), TOO_MANY_SUBSCRIPTIONS, "subscribe", "info",
                 "this connection holds 0 subscriptions, the limit; use another connection",
                 id="subscription limit"),
    pytest.param(req("submit_reading", {"tx": "00"}), StaleSequenceError.code, "submit_reading",
                 "info", "stale_sequence", id="chain rule"),
    pytest.param(req("get_receipt", {"id": KEY.hex()}), NOT_FOUND, "get_receipt", "debug",
                 "no committed transaction with this id", id="not found"),
]


@pytest.mark.parametrize(("message", "code", "method", "level", "reason"), CASES)
async def test_each_refusal_is_logged_once_with_its_method_code_reason_and_address(
        message, code, method, level, reason):
    refusals = RefusalLog()
    conn = Connection(1, f"{ADDRESS}:4000", ConnectionLimits(max_subscriptions=0),
                      trio.CancelScope())
    with capture_logs() as logs:
        reply = json.loads(await dispatcher().handle_text(
            message, conn=conn, refused=refusals.client(conn.address)))
    assert reply["error"]["code"] == code
    event = "api_admin_refused" if code == UNAUTHORIZED else "api_request_refused"
    [line] = lines(logs)
    assert line[:4] + line[5:] == (event, level, method, code, ADDRESS)
    assert line[4] == (reason if reason is not None else reply["error"]["message"])
    assert KEY.hex()[:16] not in repr(logs) and TOKEN not in repr(logs)
    assert refusals.counts() == {code: 1}


async def test_a_bad_signature_is_a_warning_and_a_notification_is_logged_though_not_answered():
    refusals = RefusalLog()
    rpc, conn = dispatcher(), Conn()
    refused = refusals.client(ADDRESS)
    await rpc.handle_text(req("auth_challenge"), conn=conn, refused=refused)
    key = SigningKey.generate()
    with capture_logs() as logs:
        await rpc.handle_text(req("authenticate", {"public_key": key.public.hex(),
                                                   "signature": "00" * 64}),
                              conn=conn, refused=refused)
        assert await rpc.handle_text('{"jsonrpc":"2.0","method":"nope"}', refused=refused) is None
    assert [line[:4] for line in lines(logs)] == [
        ("api_request_refused", "warning", "authenticate", BAD_AUTH_SIGNATURE),
        ("api_request_refused", "info", "nope", METHOD_NOT_FOUND)]
    assert key.public.hex()[:16] not in repr(logs)


async def test_answers_and_bugs_are_no_refusals():
    refusals = RefusalLog()
    refused = refusals.client(ADDRESS)
    with capture_logs() as logs:
        assert json.loads(await dispatcher().handle_text(req("add", [2, 3]),
                                                         refused=refused))["result"] == 5
        reply = json.loads(await dispatcher().handle_text(req("buggy"), refused=refused))
    assert reply["error"]["code"] == INTERNAL_ERROR
    assert [e["event"] for e in logs] == ["rpc_method_failed"]  # logged as a bug, once
    assert refusals.counts() == {}


async def test_each_request_of_a_batch_refused_is_logged():
    refusals = RefusalLog()
    batch = json.dumps([json.loads(req("add", [1])), json.loads(req("nope")), 7])
    with capture_logs() as logs:
        await dispatcher().handle_text(batch, refused=refusals.client(ADDRESS))
    assert [line[2:4] for line in lines(logs)] == [("nope", METHOD_NOT_FOUND),
                                                   (None, INVALID_REQUEST)]


# the bound -------------------------------------------------------------------------------


async def test_a_flood_from_one_address_is_a_few_lines_then_a_count_at_the_windows_end(
        autojump_clock):
    refusals = RefusalLog()
    rpc = dispatcher()
    async with trio.open_nursery() as nursery:
        await nursery.start(refusals.run)
        with capture_logs() as logs:
            began = trio.current_time()
            for _ in range(1000):
                await rpc.handle_text("{not json", refused=refusals.client(ADDRESS))
            await rpc.handle_text(req("nope"), refused=refusals.client("198.51.100.1"))
            assert trio.current_time() == began  # all in one window
            await trio.sleep(1.5 * REFUSAL_WINDOW_S)  # past its end: run() tells the rest
        nursery.cancel_scope.cancel()
    events = [(e["event"], e.get("address")) for e in logs]
    assert events == [("api_request_refused", ADDRESS)] * REFUSAL_LINES_PER_WINDOW + [
        ("api_request_refused", "198.51.100.1"),  # another address has lines of its own
        ("api_refusals_suppressed", ADDRESS)]
    summary = logs[-1]
    assert (summary["suppressed"], summary["logged"], summary["codes"], summary["log_level"],
            summary["window_s"]) == (1000 - REFUSAL_LINES_PER_WINDOW, REFUSAL_LINES_PER_WINDOW,
                                     {str(PARSE_ERROR): 995}, "info", REFUSAL_WINDOW_S)
    assert refusals.counts() == {PARSE_ERROR: 1000, METHOD_NOT_FOUND: 1}


async def test_a_steady_flood_is_bounded_in_every_window(autojump_clock):
    refusals = RefusalLog()
    windows = 5
    with capture_logs() as logs:
        for _ in range(windows * 10):  # 100 refusals a second from one address for 5 s
            for _ in range(10):
                refusals.refused(ADDRESS, "nope", RpcError(METHOD_NOT_FOUND, "no"))
            await trio.sleep(REFUSAL_WINDOW_S / 10)
        refusals.end_window()
    assert len([e for e in logs if e["event"] == "api_request_refused"]) == (
        windows * REFUSAL_LINES_PER_WINDOW)
    told = [e["suppressed"] for e in logs if e["event"] == "api_refusals_suppressed"]
    assert len(told) == windows and sum(told) == windows * (100 - REFUSAL_LINES_PER_WINDOW)


async def test_without_the_task_a_window_ends_at_the_next_refusal(autojump_clock):
    refusals = RefusalLog(lines_per_window=1)
    with capture_logs() as logs:
        for _ in range(3):
            refusals.refused(ADDRESS, None, RpcError(NOT_FOUND, "no"))
        await trio.sleep(REFUSAL_WINDOW_S)
        refusals.refused(ADDRESS, None, RpcError(FORBIDDEN, "no"))
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("api_request_refused", "debug"), ("api_refusals_suppressed", "debug"),
        ("api_request_refused", "warning")]
    assert logs[1]["suppressed"] == 2


async def test_the_summary_takes_the_level_of_the_most_severe_refusal_it_counts(autojump_clock):
    refusals = RefusalLog(lines_per_window=0)
    with capture_logs() as logs:
        for code in (NOT_FOUND, FORBIDDEN, PARSE_ERROR):
            refusals.refused(ADDRESS, None, RpcError(code, "no"))
        refusals.end_window()
    assert [(e["event"], e["log_level"], e["suppressed"]) for e in logs] == [
        ("api_refusals_suppressed", "warning", 3)]


async def test_addresses_past_the_limit_share_one_window(autojump_clock):
    refusals = RefusalLog(lines_per_window=1, max_addresses=2)
    with capture_logs() as logs:
        for n in range(10):
            refusals.refused(f"192.0.2.{n}", None, RpcError(PARSE_ERROR, "no"))
        refusals.end_window()
    assert [(e["event"], e["address"]) for e in logs] == [
        ("api_request_refused", "192.0.2.0"), ("api_request_refused", "192.0.2.1"),
        ("api_request_refused", OTHER_ADDRESSES), ("api_refusals_suppressed", OTHER_ADDRESSES)]
    assert logs[-1]["suppressed"] == 7


async def test_what_a_client_chose_is_cut_short_and_a_dropped_transaction_is_not_retold():
    refusals = RefusalLog()
    with capture_logs() as logs:
        refusals.refused(ADDRESS, "m" * 10_000, RpcError(INVALID_PARAMS, "r" * 10_000))
        refusals.refused(ADDRESS, "get_receipt", RpcError(
            TX_DROPPED, f"dropped: device {KEY.hex()[:16]} was revoked",
            {"reason": f"device {KEY.hex()[:16]} was revoked"}))
    assert (len(logs[0]["method"]), len(logs[0]["reason"])) == (MAX_METHOD_CHARS,
                                                                MAX_REASON_CHARS)
    assert (logs[1]["log_level"], logs[1]["code"]) == ("debug", TX_DROPPED)
    assert KEY.hex()[:16] not in repr(logs)


async def test_a_binary_frame_refused_whole_is_logged_with_its_code():
    refusals = RefusalLog()
    with capture_logs() as logs:
        await make_api().handle_binary(b"\x92\x01\x91\x91", refusals.client(ADDRESS))
    assert [line[:4] + line[5:] for line in lines(logs)] == [
        ("api_request_refused", "info", None, NESTED_TOO_DEEP, ADDRESS)]
    assert isinstance(FrameError(NESTED_TOO_DEEP, "x"), RpcError)
    assert refusals.counts() == {NESTED_TOO_DEEP: 1}


async def test_a_batch_with_refused_transactions_is_one_line_and_a_whole_batch_none():
    refusals, api = RefusalLog(), make_api()
    ok, refused = reading(2), reading(3)  # the fake admission refuses odd sequence numbers
    conn = Connection(1, f"{ADDRESS}:4000", ConnectionLimits(), trio.CancelScope(),
                      refused=refusals.client(ADDRESS))
    rpc = Dispatcher(api.methods())
    with capture_logs() as logs:
        await api.handle_binary(codec.encode([7, [ok.raw, refused.raw, 5]]), conn.refused)
        await rpc.handle_text(req("submit_readings", {"txs": [refused.raw.hex(), "zz"]}),
                              conn=conn, refused=conn.refused)
        await api.handle_binary(codec.encode([8, [ok.raw]]), conn.refused)  # all accepted
        await rpc.handle_text(req("submit_readings", {"txs": [ok.raw.hex()]}), conn=conn,
                              refused=conn.refused)
    assert [(e["event"], e["log_level"], e["method"], e["refused"], e["of"], e["code"],
             e["reason"], e["address"]) for e in logs] == [
        ("api_transactions_refused", "info", None, 2, 3, UnknownDeviceError.code,
         "unknown_device", ADDRESS),
        ("api_transactions_refused", "info", "submit_readings", 2, 2, UnknownDeviceError.code,
         "unknown_device", ADDRESS)]
    assert refusals.counts() == {}  # the batches were answered: no request was refused


async def test_a_flood_on_a_connection_is_answered_counted_and_logged_boundedly(nursery):
    flood = 200
    server = ApiServer(ApiServerConfig(host="127.0.0.1", port=0, close_timeout_s=1.0),
                       {"add": add})
    with trio.fail_after(10), capture_logs() as logs:
        port = await nursery.start(server.run)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            for _ in range(flood):
                await ws.send_message("{not json")
            for _ in range(flood):
                assert json.loads(await ws.get_message())["error"]["code"] == PARSE_ERROR
            await ws.send_message(b"\x92\x01\x90")  # this server takes no binary frames
            assert json.loads(await ws.get_message())["error"]["code"] == INVALID_REQUEST
            await ws.send_message(req("add", [1, 2]))  # an answer is no refusal
            assert json.loads(await ws.get_message())["result"] == 3

            window_ends = (math.floor(trio.current_time() / REFUSAL_WINDOW_S) + 1
                           ) * REFUSAL_WINDOW_S  # the windows are aligned to trio's clock
            await trio.sleep_until(window_ends)
            await trio.testing.wait_all_tasks_blocked()  # the refusal log's task has run
    lines = [e for e in logs if e["event"] == "api_request_refused"]
    summaries = [e for e in logs if e["event"] == "api_refusals_suppressed"]
    assert len(lines) + sum(e["suppressed"] for e in summaries) == flood + 1
    assert summaries and len(lines) <= REFUSAL_LINES_PER_WINDOW * (len(summaries) + 1)
    assert {e["address"] for e in lines + summaries} == {"127.0.0.1"}
    assert server.stats().requests_refused == {PARSE_ERROR: flood, INVALID_REQUEST: 1}
