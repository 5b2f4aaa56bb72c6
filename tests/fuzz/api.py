"""The client API's entry points under fuzzing: a real one-authority node (LevelDB in a
temporary directory), and its JSON-RPC dispatcher and binary frame handler built as the
node builds them, fed one input at a time from the thread Hypothesis runs in.

Neither entry point may raise on any input: a JSON text gets a JSON reply (or none, for a
notification), a binary frame gets a msgpack reply. A reply that says ``internal error``
(a method raised something it does not document) counts as a crash too.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio
from hypothesis import strategies as st

from iomtnode.api.auth import ConnectionAuth
from iomtnode.api.jsonrpc import INTERNAL_ERROR, Dispatcher
from iomtnode.api.methods import ClientApi
from iomtnode.api.refusals import RefusalLog
from iomtnode.api.subscriptions import SubscriptionsApi
from iomtnode.api.txwatch import TxWatch
from iomtnode.config import Config
from iomtnode.home import init_home
from iomtnode.node import Node
from iomtnode.node.views import PeerAdminView, StatusView

from ..core.helpers import CHAIN_ID
from . import corpus
from .mutate import mutated, mutated_bytes, mutated_encoding, seeded
from .targets import Target

CONFIG = Config(api_listen="127.0.0.1:0", p2p_listen="127.0.0.1:0", block_interval_s=0.05,
                empty_block_interval_s=1.0)


class _Conn:
    """What a method (and the guard) may use of its connection (the server's ``Connection``):
    tasks run in the call's own nursery, which is cancelled once the reply is made (a
    subscription ends with it); keys are proven as on a real connection."""

    def __init__(self, nursery: trio.Nursery, refusals: RefusalLog) -> None:
        self._nursery = nursery
        self.auth = ConnectionAuth()
        self.address = "127.0.0.1"  # what per-address limits count by
        self.refused = refusals.client(self.address)  # refusals are logged, as by the server

    @property
    def proven_keys(self) -> frozenset[bytes]:
        return self.auth.keys

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._nursery.start_soon(fn, *args)

    def check_subscription_room(self) -> None:
        """One message per connection here: never at the limit."""

    def start_subscription(self, fn: Callable[..., Any], *args: Any,
                           last_words: Callable[[str], Any] | None = None) -> None:
        self._nursery.start_soon(fn, *args)

    async def admit_request(self, cost: int = 1) -> None:
        """Not rate limited here."""

    async def notify_paced(self, method: str, params: Any) -> bool:
        return False

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """The connection ends with the message anyway."""

    async def notify(self, method: str, params: Any) -> bool:
        return False


@dataclass
class ApiEntry:
    """The node's two client entry points, callable from a worker thread."""

    dispatcher: Dispatcher
    binary: Callable[..., Any]  # (frame, refused)
    refusals: RefusalLog = field(default_factory=RefusalLog)

    async def _text(self, message: str) -> str | None:
        async with trio.open_nursery() as nursery:
            conn = _Conn(nursery, self.refusals)
            reply = await self.dispatcher.handle_text(message, conn=conn, refused=conn.refused)
            nursery.cancel_scope.cancel()
        return reply

    def text(self, message: str) -> None:
        reply = trio.from_thread.run(self._text, message)
        if reply is None:
            return
        answers = json.loads(reply)
        for answer in answers if isinstance(answers, list) else [answers]:
            if answer.get("error", {}).get("code") == INTERNAL_ERROR:
                raise AssertionError(f"internal error answering {message[:200]!r}")

    def frame(self, frame: bytes) -> None:
        reply = trio.from_thread.run(self.binary, frame, self.refusals.client("127.0.0.1"))
        msgpack.unpackb(reply, raw=False)  # a well-formed msgpack reply, always


@asynccontextmanager
async def api_node(path: Path) -> AsyncIterator[ApiEntry]:
    """A running node at ``path`` and its API entry points."""
    home = init_home(path, chain_id=CHAIN_ID, config=CONFIG)
    node = Node(home, home.load_config())
    async with trio.open_nursery() as nursery:
        info = await nursery.start(node.run)
        s = info.services
        watch = TxWatch(s.mempool.tx_status)
        s.feed.listen(watch.committed)
        s.mempool.listen_drops(watch.dropped)
        api = ClientApi(submitter=s.admission, chain=s.chain, txs=s.mempool,
                        peers=PeerAdminView(s.p2p),
                        status=StatusView(node.key.public, s.chain, s.admission, s.p2p,
                                          s.sync, s.consensus, s.figures),
                        groups=(SubscriptionsApi(s.feed, s.chain, s.mempool, watch),))
        yield ApiEntry(Dispatcher(api.methods(), admin_methods=api.admin_methods(),
                                  admin_token=node.admin_token, guard=api.access.check),
                       api.handle_binary)
        nursery.cancel_scope.cancel()


def run_with_api(path: Path, work: Callable[[ApiEntry], Any]) -> Any:
    """Start a node at ``path``, run ``work(entry)`` in a worker thread, stop the node."""

    async def main() -> Any:
        async with api_node(path) as entry:
            return await trio.to_thread.run_sync(work, entry)

    return trio.run(main)


# inputs ----------------------------------------------------------------------------------

JSON_STRINGS = ("", "00", "zz", "0" * 64, "f" * 65, "0x00", "\u00e9", "\ud800")


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value: nested arrays and objects, big and negative numbers, odd strings."""
    r = rng.random()
    if depth < 5 and r < 0.2:
        return [random_json(rng, depth + 1) for _ in range(rng.choice((0, 1, 2, 5)))]
    if depth < 5 and r < 0.3:
        return {rng.choice(("tx", "txs", "id", "ids", "height", "hash", "token", "")):
                random_json(rng, depth + 1) for _ in range(rng.randrange(4))}
    return rng.choice((
        None, True, False, 0, -1, 1, 2**63, -(2**70), 10**400, 0.5, 1e308,
        rng.randint(-(2**64), 2**64), rng.choice(JSON_STRINGS), rng.randbytes(33).hex(),
        "".join(rng.choice("az09 \"\\\u00e9") for _ in range(rng.randrange(10))),
    ))


def _requests() -> list[dict[str, Any]]:
    """A valid request of every public method, and of an admin one (with a wrong token)."""
    txs = corpus.txs()
    block = corpus.blocks()[1]
    tx_hex = [tx.raw.hex() for tx in txs]
    calls: list[tuple[str, Any]] = [
        ("submit_reading", {"tx": tx_hex[0]}),
        ("submit_tx", {"tx": corpus.tx_of("grant").raw.hex()}),
        ("submit_tx", [corpus.tx_of("evidence").raw.hex()]),
        ("submit_tx", {"tx": corpus.tx_of("epoch").raw.hex()}),
        ("submit_readings", {"txs": tx_hex[:2]}),
        ("get_block", {"height": 0}), ("get_block", {"hash": block.hash.hex()}),
        ("get_receipt", {"id": txs[0].id.hex()}), ("get_tx_status", {"id": txs[1].id.hex()}),
        ("get_tx_status", {"ids": [tx.id.hex() for tx in txs]}),
        ("get_device", {"id": txs[0].body.signer.hex()}), ("get_evidence", None),
        ("get_authorities", []), ("status", None), ("subscribe_blocks", {}),
        ("subscribe_blocks", {"since_height": 0}),
        ("subscribe_tx_status", {"ids": [tx.id.hex() for tx in txs]}),
        ("admin_peers", {"token": "0" * 32}), ("no_such_method", {}),
    ]
    out: list[dict[str, Any]] = []
    for i, (method, params) in enumerate(calls):
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": i}
        if params is not None:
            request["params"] = params
        out.append(request)
    return out


def mutate_json(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """``value`` with one part changed somewhere down its tree."""
    if isinstance(value, dict) and value and rng.random() < 0.75:
        out = dict(value)
        name = rng.choice(sorted(out))
        op = rng.randrange(5)
        if op == 0:
            del out[name]
        elif op == 1:
            out[rng.choice(("extra", "params", "id", "token", name + "x"))] = random_json(rng)
        else:
            out[name] = mutate_json(rng, out[name], depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.75:
        items = list(value)
        i = rng.randrange(len(items))
        if rng.random() < 0.5:
            items[i] = mutate_json(rng, items[i], depth + 1)
        else:
            items.insert(i, random_json(rng, depth + 1))
        return items
    if isinstance(value, str) and value and rng.random() < 0.5:
        cut = rng.randrange(len(value) + 1)
        return value[:cut] + rng.choice(("", "z", "0", "\u00e9", "00" * 40)) + value[cut + 1:]
    return random_json(rng, depth)


def request_text(rng: random.Random, request: dict[str, Any]) -> str:
    """A mutated request, sometimes in a batch, sometimes broken as text."""
    samples = _requests()
    body: Any = mutate_json(rng, request)
    if rng.random() < 0.2:
        body = [body, *(rng.choice(samples) for _ in range(rng.randrange(4)))]
    text = json.dumps(body)
    if rng.random() < 0.15:
        cut = rng.randrange(len(text) + 1)
        text = text[:cut] + rng.choice(("", "{", "]", '"', "\\", "\x00")) + text[
            cut + rng.randrange(4):]
    return text


def _frames() -> list[Any]:
    raws = [tx.raw for tx in corpus.txs()]
    return [[1, raws[:2]], [2, [raws[0]]], [3, raws]]


def api_targets(entry: Callable[[], ApiEntry]) -> list[Target]:
    """``entry()`` is the running node's :class:`ApiEntry` (in the thread that calls)."""
    frames = [msgpack.packb(f, use_bin_type=True) for f in _frames()]
    return [
        Target("api.json.text", st.text(max_size=300), lambda m: entry().text(m), ()),
        Target("api.json.values", seeded(lambda rng: json.dumps(random_json(rng))),
               lambda m: entry().text(m), ()),
        Target("api.json.requests", mutated(_requests(), request_text),
               lambda m: entry().text(m), ()),
        Target("api.binary.bytes", st.binary(max_size=512), lambda b: entry().frame(b), ()),
        Target("api.binary.frames", mutated_encoding(_frames()) | mutated_bytes(frames),
               lambda b: entry().frame(b), ()),
    ]
