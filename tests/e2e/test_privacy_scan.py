"""Nothing identifying in clear (docs/privacy.md, section 4), on real node processes: after
known patients' devices sent every vital kind over its range, no byte a node stores (its
LevelDB, decompressed too, its audit log, its config, its log lines) and no public API
answer holds a patient's identity key, a scope's or a vital kind's name, or a plaintext; and
every sealed payload has the same size whatever the value."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import plyvel
import pytest

from iomtnode.client import ApiError, open_client
from iomtnode.core import codec
from iomtnode.home import Home
from iomtnode.localnet import Localnet
from iomtnode.patient import plaintext as pt

from .privacykit import (
    FAST,
    KIND_NAMES,
    Patient,
    anonymous_answers,
    every_vital,
    files_under,
    leveldb_contents,
    now_ms,
    register,
    scan,
    seal,
    signed_in,
    submit_and_wait,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

UNKNOWN_EPOCH = 1025  # UnknownEpochError
SIDECAR_BYTES = 128  # a class 0 sidecar: salt 16 + ephemeral key 32 + padded 64 + tag 16


def values_tail(plain: pt.Plaintext) -> bytes:
    """The plaintext's encoding from its values on (the values list, the samples and the
    device class): a value in clear however it is framed, long enough not to match by
    chance."""
    return (codec.encode(list(plain.values)) + codec.encode(plain.samples)
            + codec.encode(plain.device_class))


async def test_no_identity_kind_or_value_in_any_stored_byte_log_line_or_public_answer(
        tmp_path: Path):
    async with Localnet.start(nodes=2, path=tmp_path / "net", env=FAST) as net:
        chain_id = net.manifest.chain_id
        authority = Home(net.node("node1").home).load_key()
        patients = [
            Patient.make(chain_id, {"vitals": [pt.BEDSIDE_MONITOR, pt.WEARABLE],
                                    "night": [pt.WEARABLE]}),
            Patient.make(chain_id, {"vitals": [pt.BEDSIDE_MONITOR]}),
        ]
        streams = [s for p in patients for s in p.streams.values()]
        urls = [net.node(name).api for name in net.names]
        async with open_client(urls[0]) as one, open_client(urls[1]) as two:
            registered = await register(one, [one, two], authority, patients)
            start = now_ms() - 60_000
            readings = []
            for stream in streams:
                for device in stream.devices:
                    readings += every_vital(stream, device, start + 100 * len(readings),
                                            chain_id)
            await submit_and_wait(one, [one, two], [r.tx for r in readings])
            # a reading sealed to an epoch not announced yet is refused: the refusal's log
            # lines and answers are scanned too
            early = seal(streams[0], streams[0].devices[0], now_ms(),
                         pt.Plaintext(pt.HEART_RATE, now_ms(), (131,)), chain_id, epoch=2)
            with pytest.raises(ApiError) as refused:
                await one.call("submit_reading", tx=early.tx.raw.hex())
            assert refused.value.code == UNKNOWN_EPOCH

        # the sealed size says nothing of the value: plaintexts differ in length, sidecars not
        assert len({len(r.plain.encode()) for r in readings}) > 1
        for url in urls:
            for stream in streams:
                async with signed_in(url, stream.key) as client:
                    got = await client.call("get_patient_records", stream=stream.public.hex())
                sent = {r.tx.id: r.tx.sidecar for r in readings if r.stream is stream}
                assert len(got["readings"]) == len(sent)
                for entry in got["readings"]:
                    sidecar = bytes.fromhex(entry["sidecar"])
                    assert entry["size_class"] == 0
                    assert len(sidecar) == SIDECAR_BYTES
                    assert sidecar in sent.values()

        # every public answer, as a client that proved no key
        tx_ids = [t.id for t in registered] + [r.tx.id for r in readings]
        answers: dict[str, bytes] = {}
        for name, url in zip(net.names, urls, strict=True):
            async with open_client(url) as anonymous:
                found = await anonymous_answers(
                    anonymous, tx_ids, [s.public for s in streams],
                    [d.key.public for s in streams for d in s.devices])
                found["get_tx_status (refused)"] = json.dumps(await anonymous.call(
                    "get_tx_status", id=early.tx.id.hex())).encode()
            answers |= {f"{name} {what}": data for what, data in found.items()}
        assert all(b'"code"' in data for what, data in answers.items() if "get_device" in what)

        # every byte each node stores and every line it logged, once it has stopped
        for name in net.names:
            await net.stop(name)
        stored: dict[str, bytes] = files_under(net.manifest.dir)
        for name in net.names:
            data = Path(net.node(name).home) / "data"
            stored[f"{data} (every key and value)"] = leveldb_contents(data)

    needles: dict[str, bytes] = {}
    for i, patient in enumerate(patients):
        needles[f"patient {i} identity key"] = patient.identity
    for scope in {s.scope for s in streams}:  # a stream's scope is never on the ledger
        needles[f"scope {scope}"] = scope.encode()
    for kind in KIND_NAMES:
        needles[f"kind {kind}"] = kind.encode()
        needles[f"kind {kind} (msgpack)"] = codec.encode(kind)
    for i, r in enumerate([*readings, early]):
        needles[f"reading {i} plaintext"] = r.plain.encode()
        needles[f"reading {i} values {list(r.plain.values)}"] = values_tail(r.plain)

    # the scanner finds what is there: the sidecars in the LevelDB, the streams in answers,
    # and a plaintext, an identity key and a kind name planted in a node's home
    assert scan(answers, {"a stream": streams[0].public})
    leveldb = {k: v for k, v in stored.items() if "every key" in k or "/data/" in k}
    for r in readings[:3]:
        assert {where for where, _ in scan(leveldb, {"sidecar": r.tx.sidecar})} >= {
            f"{Path(net.node(n).home) / 'data'} (every key and value)" for n in net.names}
    home = Path(net.node("node1").home)
    (home / "planted.log").write_bytes(  # a log line naming a kind and a plaintext in hex
        b'{"event": "reading_accepted", "kind": "heart_rate", "payload": "'
        + readings[0].plain.encode().hex().encode() + b'"}\n' + patients[1].identity)
    old_style = codec.encode([1, readings[1].tx.body.device, 2, 0, "spo2",  # rules v2
                              readings[1].plain.encode()])
    planted_db = tmp_path / "planted-data"  # a copy of node1's LevelDB holding it
    shutil.copytree(home / "data", planted_db)
    db = plyvel.DB(str(planted_db))
    db.put(b"planted", old_style)
    db.close()
    planted = files_under(home) | files_under(planted_db)
    planted["planted (every key and value)"] = leveldb_contents(planted_db)
    hits = {(Path(where).name, n) for where, n in scan(planted, needles)}
    assert hits >= {("planted.log", "kind heart_rate"),
                    ("planted.log", "reading 0 plaintext (hex)"),
                    ("planted.log", "patient 1 identity key"),
                    ("planted (every key and value)", "kind spo2"),
                    ("planted (every key and value)", "reading 1 plaintext")}
    assert ("reading 1 plaintext" in {n for _, n in scan(files_under(planted_db), needles)}
            ), "the scan of the LevelDB's raw files misses a stored plaintext"
    (home / "planted.log").unlink()

    leaks = scan(stored, needles) + scan(answers, needles)
    assert not leaks, leaks[:20]
