"""The short fuzz run of the test suite: every p2p message decoder, the signed objects they
carry, and the client API's JSON and binary entry points, each under Hypothesis for a few
dozen inputs (``IOMTNODE_FUZZ_EXAMPLES`` raises it). A failure is shrunk and shown; the
long run is ``python -m tests.fuzz --executions N``."""

from __future__ import annotations

import json
import os

import pytest

from iomtnode.core.tx import KIND_NAMES
from iomtnode.p2p.messages import MESSAGE_TYPES

from . import corpus
from .api import ApiEntry, api_targets, run_with_api
from .runner import run_engine
from .targets import Target, targets

EXAMPLES = int(os.environ.get("IOMTNODE_FUZZ_EXAMPLES", "40"))  # per target

pytestmark = pytest.mark.timeout(120)


def test_every_message_kind_has_a_valid_sample_to_mutate() -> None:
    """A kind declared without a sample in :mod:`.corpus` would be fuzzed only as bytes."""
    missing = set(MESSAGE_TYPES) - {msg.KIND for msg in corpus.messages()}
    assert not missing, f"add a valid sample of kinds {sorted(missing)} to tests/fuzz/corpus.py"


def test_the_transaction_samples_cover_every_kind_and_each_envelope() -> None:
    """Every kind, every kind's sidecar beside it (``[body, signature, sidecar]``, with a
    sidecar in both bin 8 and bin 16 form) and a reading without its sidecar."""
    samples = corpus.txs()
    assert {tx.kind_name for tx in samples} == set(KIND_NAMES.values())
    with_sidecar = {tx.kind_name for tx in samples if tx.sidecar}
    assert with_sidecar == {"reading", "grant", "revoke_grant", "epoch"}
    assert all(tx.raw[0] == 0x93 for tx in samples if tx.sidecar)
    assert {len(tx.sidecar) < 256 for tx in samples if tx.sidecar} == {True, False}
    assert any(tx.kind_name == "reading" and tx.raw[0] == 0x92 for tx in samples)
    assert all(tx.kind_name != "reading" or tx.sidecar or tx.raw[0] == 0x92 for tx in samples)
    block = corpus.blocks()[1]
    assert block.txs == samples  # a block carries every form


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name)
def test_decoders_raise_only_their_documented_errors(target: Target) -> None:
    assert run_engine(target, EXAMPLES).executions >= EXAMPLES


def test_the_api_answers_every_input(tmp_path) -> None:
    current: list[ApiEntry] = []
    chosen = api_targets(lambda: current[0])

    def work(entry: ApiEntry) -> list[int]:
        current.append(entry)
        return [run_engine(target, EXAMPLES).executions for target in chosen]

    assert run_with_api(tmp_path / "node", work) >= [EXAMPLES] * len(chosen)


def test_the_fuzzed_entry_serves_every_method_that_uses_its_connection(tmp_path) -> None:
    """The fuzzed entry's connection offers what the server's does (subscriptions, proofs,
    the guard's proven keys): otherwise a fuzz input that names such a method fails only when
    Hypothesis happens to pick it."""
    calls = [("subscribe_blocks", {}), ("subscribe_blocks", {"since_height": 0}),
             ("subscribe_tx_status", {"ids": ["00" * 32]}), ("auth_challenge", {}),
             ("authenticate", {"public_key": "00" * 32, "signature": "00" * 64}),
             ("get_device", {"id": "00" * 32})]

    def work(entry: ApiEntry) -> None:
        for method, params in calls:  # each raises on an internal error
            entry.text(json.dumps({"jsonrpc": "2.0", "method": method, "params": params,
                                   "id": 1}))

    run_with_api(tmp_path / "node", work)
