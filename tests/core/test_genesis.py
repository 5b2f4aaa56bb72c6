"""The genesis: JSON round trip, a stable hash, and one error type for every bad file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from iomtnode.core import codec
from iomtnode.core.block import NO_PROPOSER, ZERO_HASH, authorities_hash
from iomtnode.core.crypto import blake2b256
from iomtnode.core.genesis import (
    DEFAULT_MAX_FUTURE_DRIFT_MS,
    GENESIS_VERSION,
    MAX_AUTHORITIES,
    Genesis,
    GenesisError,
)
from iomtnode.core.window import DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW

from .helpers import pub

AUTHS = (pub("A"), pub("B"), pub("C"))
G = Genesis(chain_id="iomt-test", time_ms=1_700_000_000_000, authorities=AUTHS,
            admission_threshold=2, max_future_drift_ms=15_000)


def doc(**changes: Any) -> dict[str, Any]:
    d = G.to_json()
    d.update(changes)
    return d


def refused_doc(d: Any, match: str | None = None) -> None:
    with pytest.raises(GenesisError, match=match) as info:
        Genesis.from_json(d)
    assert type(info.value) is GenesisError


def test_json_round_trip(tmp_path: Path) -> None:
    assert Genesis.from_json(G.to_json()) == G
    assert Genesis.from_json(json.loads(json.dumps(G.to_json()))) == G
    path = tmp_path / "genesis.json"
    path.write_text(G.to_text())
    assert Genesis.load(path) == G
    assert Genesis.load(path).hash == G.hash
    assert json.loads(path.read_text())["authorities"] == [a.hex() for a in AUTHS]


def test_json_view() -> None:
    assert G.to_json() == {
        "version": GENESIS_VERSION,
        "chain_id": "iomt-test",
        "time_ms": 1_700_000_000_000,
        "authorities": [a.hex() for a in AUTHS],
        "admission_threshold": 2,
        "max_future_drift_ms": 15_000,
        "replay_window": DEFAULT_REPLAY_WINDOW,
    }


def test_drift_defaults_when_absent() -> None:
    d = doc()
    del d["max_future_drift_ms"]
    assert Genesis.from_json(d).max_future_drift_ms == DEFAULT_MAX_FUTURE_DRIFT_MS


def test_a_genesis_without_replay_window_loads_with_the_default_and_its_old_hash() -> None:
    # a genesis written before the field existed names the same chain as before
    d = doc()
    del d["replay_window"]
    old = Genesis.from_json(d)
    assert old.replay_window == DEFAULT_REPLAY_WINDOW
    assert old.hash == blake2b256(codec.encode(
        [GENESIS_VERSION, "iomt-test", 1_700_000_000_000, list(AUTHS), 2, 15_000]))


def test_another_replay_window_is_another_chain() -> None:
    assert replace(G, replay_window=64).hash == blake2b256(codec.encode(
        [GENESIS_VERSION, "iomt-test", 1_700_000_000_000, list(AUTHS), 2, 15_000, 64]))
    assert Genesis.from_json(doc(replay_window=1)).replay_window == 1
    assert Genesis.from_json(doc(replay_window=MAX_REPLAY_WINDOW)).hash != G.hash


@pytest.mark.parametrize("value", [0, -1, MAX_REPLAY_WINDOW + 1, 2**64, 1.5, 1024.0, "1024",
                                   None, True])
def test_replay_window_bounds(value: Any) -> None:
    refused_doc(doc(replay_window=value), "replay_window")


def test_hash_is_stable() -> None:
    assert G.hash == Genesis.from_json(G.to_json()).hash
    assert G.hash == blake2b256(codec.encode(
        [GENESIS_VERSION, "iomt-test", 1_700_000_000_000, list(AUTHS), 2, 15_000]
    ))


@pytest.mark.parametrize(
    "changes",
    [
        dict(chain_id="iomt-test2"),
        dict(time_ms=1_700_000_000_001),
        dict(authorities=(pub("A"), pub("B"), pub("D"))),
        dict(authorities=(pub("B"), pub("A"), pub("C"))),  # order matters: it sets proposers
        dict(authorities=AUTHS[:2]),
        dict(admission_threshold=1),
        dict(max_future_drift_ms=15_001),
        dict(replay_window=1023),
    ],
    ids=lambda c: next(iter(c)),
)
def test_hash_changes_with_each_field(changes: dict[str, Any]) -> None:
    assert replace(G, **changes).hash != G.hash


def test_genesis_block() -> None:
    b = G.block()
    assert b.height == 0
    assert b.header.parent == G.hash
    assert b.header.proposer == NO_PROPOSER
    assert b.header.time_ms == G.time_ms
    assert (b.txs, b.last_commit, b.header.tx_count) == ((), None, 0)
    assert b.header.last_commit_hash == ZERO_HASH
    assert b.header.authorities_hash == authorities_hash(AUTHS)
    assert G.block().hash == b.hash


# errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="no genesis file"):
        Genesis.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"not json", b"{\"version\": 1,}", b"\xff\xfe{}", b"[" * 100_000],
    ids=["empty", "unclosed", "text", "trailing-comma", "not-utf8", "deeply-nested"],
)
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "genesis.json"
    path.write_bytes(content)
    with pytest.raises(GenesisError, match="cannot read genesis") as info:
        Genesis.load(path)
    assert type(info.value) is GenesisError


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="cannot read genesis"):
        Genesis.load(tmp_path)


@pytest.mark.parametrize("content", ["[]", "1", "null", "\"genesis\""])
def test_not_an_object(tmp_path: Path, content: str) -> None:
    path = tmp_path / "genesis.json"
    path.write_text(content)
    with pytest.raises(GenesisError, match="must be a JSON object"):
        Genesis.load(path)


def test_another_json_file_is_named_as_no_genesis(tmp_path: Path) -> None:
    # `init --genesis patient.key` said only "genesis version must be 1"
    path = tmp_path / "patient.key"
    path.write_text(json.dumps({"type": "iomt-patient", "root": "ab" * 32}))
    with pytest.raises(GenesisError) as info:
        Genesis.load(path)
    assert str(info.value) == f"{path} is not a valid genesis: genesis version must be 1"


@pytest.mark.parametrize("field", ["chain_id", "time_ms", "authorities", "admission_threshold"])
def test_missing_field(tmp_path: Path, field: str) -> None:
    d = doc()
    del d[field]
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(d))
    with pytest.raises(GenesisError, match=f"lacks the field {field}"):
        Genesis.load(path)


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_wrong_version(version: Any) -> None:
    d = doc(version=version)
    if version is None:
        del d["version"]
    refused_doc(d, "version must be 1")


@pytest.mark.parametrize(
    "authorities",
    [
        ["zz" * 32],
        ["abc"],
        [pub("A").hex()[:-2]],
        [pub("A").hex() + "00"],
        [pub("A").hex(), 7],
        [pub("A").hex(), None],
        [pub("A").hex(), pub("A").hex()],
        [],
        "ab" * 32,
        7,
        None,
        [pub("A").hex()] + [bytes([i]).hex() * 32 for i in range(MAX_AUTHORITIES)],
    ],
    ids=["not-hex", "odd-length", "31-bytes", "33-bytes", "int", "null", "duplicate",
         "none", "a-string", "a-number", "null-list", "too-many"],
)
def test_bad_authorities(authorities: Any) -> None:
    refused_doc(doc(authorities=authorities, admission_threshold=1))


@pytest.mark.parametrize("threshold", [0, -1, 4, 100, "two", None, [2]])
def test_threshold_out_of_range(threshold: Any) -> None:
    refused_doc(doc(admission_threshold=threshold))


@pytest.mark.parametrize("threshold", [1, 3])
def test_threshold_edges_allowed(threshold: int) -> None:
    assert Genesis.from_json(doc(admission_threshold=threshold)).admission_threshold == threshold


@pytest.mark.parametrize(
    "chain_id", ["", "Iomt", "1iomt", "iomt test", "iomt/test", "a" * 33, None, "i\u00f6mt"]
)
def test_bad_chain_id(chain_id: Any) -> None:
    refused_doc(doc(chain_id=chain_id), "chain_id")


def test_a_refused_chain_id_is_told_what_a_chain_id_may_be_and_quoted_short() -> None:
    with pytest.raises(GenesisError) as info:
        replace(G, chain_id="w" * 5000)
    message = str(info.value)
    assert "1 to 32 characters: a lowercase letter, then lowercase letters, digits" in message
    assert "(5000 characters)" in message and len(message) < 200
    longest = replace(G, chain_id="w" + "-_9" * 10 + "z")  # 32: the most it may have
    assert len(longest.chain_id) == 32
    with pytest.raises(GenesisError, match=r"got 'w{33}'$"):
        replace(G, chain_id="w" * 33)


@pytest.mark.parametrize(
    "changes",
    [
        dict(time_ms=-1),
        dict(max_future_drift_ms=-1),
        dict(time_ms="soon"),
        dict(time_ms=None),
        dict(time_ms=float("inf")),
        dict(time_ms=float("nan")),
        dict(max_future_drift_ms=float("-inf")),
        dict(time_ms=2**64),
        dict(max_future_drift_ms=2**64),
    ],
    ids=repr,
)
def test_bad_numbers(changes: dict[str, Any]) -> None:
    refused_doc(doc(**changes))


@pytest.mark.parametrize(
    "changes",
    [dict(version=True), dict(version=1.0), dict(time_ms="1700000000000"),
     dict(time_ms=1700000000000.0), dict(admission_threshold=True),
     dict(admission_threshold="2"), dict(max_future_drift_ms="5000"), dict(chain_id=7),
     dict(authorities="ab" * 32), dict(authorities=[7])],
    ids=repr,
)
def test_a_value_of_another_json_type_is_refused(changes: dict[str, Any]) -> None:
    """What the file says is what is hashed: a number written as a string or a float, a
    boolean for a number, is refused rather than converted (two different files would
    otherwise make one genesis)."""
    refused_doc(doc(**changes))


def test_infinity_in_a_file(tmp_path: Path) -> None:
    # Python's json accepts the non-standard Infinity and NaN literals
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(G.to_json()).replace("1700000000000", "Infinity"))
    with pytest.raises(GenesisError, match="time_ms must be an integer, not inf"):
        Genesis.load(path)


def test_every_valid_genesis_has_a_hash() -> None:
    big = replace(G, time_ms=2**64 - 1, max_future_drift_ms=2**64 - 1)
    assert len(big.hash) == 32


@pytest.mark.parametrize(
    "changes",
    [dict(authorities=()), dict(authorities=(pub("A")[:31],)), dict(admission_threshold=4),
     dict(authorities=(pub("A"), pub("A")), admission_threshold=1), dict(chain_id="Bad")],
    ids=["none", "short-key", "threshold", "duplicate", "chain-id"],
)
def test_constructor_checks(changes: dict[str, Any]) -> None:
    with pytest.raises(GenesisError):
        replace(G, **changes)
