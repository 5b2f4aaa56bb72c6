"""Erasure on real node processes (docs/privacy.md, section 5): after a patient erases a time
range of one stream and the whole scope of another, no node returns the erased payloads by
any method, their bytes leave every node's LevelDB files once compacted, and every receipt of
an erased reading still verifies offline against the genesis; readings outside the range
keep their payloads, and a range erasure keeps the grantee's wraps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iomtnode.client import ApiClient, ApiError, open_client
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment, reading_ad, wrap_hash
from iomtnode.core.receipt import verify_receipt
from iomtnode.core.tx import Erase, Grant, Reading, SignedTx, decode_tx, sign_tx
from iomtnode.home import Home
from iomtnode.localnet import Localnet
from iomtnode.patient import plaintext as pt
from iomtnode.patient.keys import GranteeKeys
from iomtnode.patient.seal import seal as seal_plain
from iomtnode.patient.wraps import FORWARD, grant_wrap

from .privacykit import (
    FAST,
    Patient,
    Stream,
    every_vital,
    files_under,
    now_ms,
    register,
    signed_in,
    submit_and_wait,
    until,
    windows,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NO_CONSENT = -32025
NOT_FOUND = 1030
COMPACTION_TIMEOUT_S = 30.0


def grant(stream: Stream, grantee: GranteeKeys, chain_id: str) -> SignedTx:
    """A forward grant of epoch 1 with the real wrap of the epoch key beside it."""
    wrap = grant_wrap(stream.root, stream.public, 1, FORWARD, grantee.box_public)
    body = Grant(stream.public, grantee.grantee, grantee.box_public, 2**63, 1, FORWARD,
                 wrap_hash(wrap), 0)
    return sign_tx(body, stream.key, chain_id, wrap)


def blob_reading(stream: Stream, ts_ms: int, chain_id: str) -> tuple[SignedTx, bytes]:
    """A spot vital sealed to size class 1: a reading whose payload is a blob in the nodes'
    store, not beside the transaction."""
    device = stream.devices[0]
    device.seq += 1
    ad = reading_ad(chain_id, stream.public, device.key.public, device.seq, 1)
    blob = seal_plain(pt.Plaintext(pt.HEART_RATE, ts_ms, (64,)), stream.epoch_public, ad,
                      size_class=1)
    body = Reading(device.key.public, device.seq, ts_ms, 1, 1, commitment(blob))
    return sign_tx(body, device.key, chain_id), blob


def present(files: dict[str, bytes], secret: bytes) -> list[str]:
    """The files holding any piece of ``secret`` (random bytes)."""
    pieces = windows(secret)
    return [name for name, data in files.items() if any(p in data for p in pieces)]


async def test_erased_payloads_leave_every_node_and_their_receipts_still_verify(
        tmp_path: Path):
    async with Localnet.start(nodes=2, path=tmp_path / "net", env=FAST) as net:
        chain_id = net.manifest.chain_id
        home = Home(net.node("node1").home)
        authority, genesis = home.load_key(), home.load_genesis()
        patient = Patient.make(chain_id, {"vitals": [pt.BEDSIDE_MONITOR],
                                          "night": [pt.WEARABLE]})
        ranged, whole = patient.streams["vitals"], patient.streams["night"]
        grantee = GranteeKeys.generate()
        urls = [net.node(name).api for name in net.names]
        datas = [Path(net.node(name).home) / "data" for name in net.names]
        base = now_ms() - 100_000
        async with open_client(urls[0]) as one, open_client(urls[1]) as two:
            await register(one, [one, two], authority, [patient])
            grants = [grant(ranged, grantee, chain_id), grant(whole, grantee, chain_id)]
            await submit_and_wait(one, [one, two], grants)
            kept_before = every_vital(ranged, ranged.devices[0], base, chain_id)[:4]
            in_range = every_vital(ranged, ranged.devices[0], base + 1000, chain_id)
            kept_after = every_vital(ranged, ranged.devices[0], base + 2000, chain_id)[:4]
            night = every_vital(whole, whole.devices[0], base, chain_id)
            blobbed, blob = blob_reading(ranged, base + 1500, chain_id)
            await one.call("put_blob", blob=blob.hex())
            readings = [r.tx for r in kept_before + in_range + kept_after + night]
            await submit_and_wait(one, [one, two], [*readings, blobbed])
            erased = [r.tx for r in in_range + night] + [blobbed]
            kept = [r.tx for r in kept_before + kept_after]

            async def blob_everywhere() -> bool:
                for url in urls:
                    async with signed_in(url, ranged.key) as client:
                        try:
                            got = await client.call("get_blob", commitment=commitment(blob).hex())
                        except ApiError as exc:
                            assert exc.code == NOT_FOUND, exc
                            return False
                    assert bytes.fromhex(got["blob"]) == blob
                return True

            await until("the blob on every node", blob_everywhere, 30)
            for url in urls:  # before: the grantee is served its wrap and the payloads
                async with signed_in(url, grantee.signing) as client:
                    held = await client.call("get_patient_records", stream=whole.public.hex())
                assert [bytes.fromhex(w["wrap"]) for w in held["wraps"]] == [grants[1].sidecar]
                assert all(entry["sidecar"] for entry in held["readings"])
                assert len(held["readings"]) == len(night)
            # the scanner sees what is there: every payload and wrap is in each LevelDB's files
            before = [files_under(data) for data in datas]
            for files in before:
                for secret in [tx.sidecar for tx in readings] + [blob] + [
                        g.sidecar for g in grants]:
                    assert present(files, secret), "a stored payload the scan does not find"

            erasures = [
                sign_tx(Erase(ranged.public, ranged.public, base + 1000, base + 2000, b"", 1),
                        ranged.key, chain_id),
                sign_tx(Erase(whole.public, whole.public, 0, U64_MAX, b"", 1), whole.key,
                        chain_id),
            ]
            await submit_and_wait(one, [one, two], erasures)
            by = {tx.id: erasures[0].id.hex() for tx in [r.tx for r in in_range] + [blobbed]}
            by |= {r.tx.id: erasures[1].id.hex() for r in night}

        for url in urls:
            # the stream key sees each erased reading's body, who erased it, and no payload
            async with signed_in(url, ranged.key) as client:
                got = await records(client, ranged)
                with pytest.raises(ApiError) as refused:
                    await client.call("get_blob", commitment=commitment(blob).hex())
                assert refused.value.code in (NO_CONSENT, NOT_FOUND)
            async with signed_in(url, whole.key) as client:
                got |= await records(client, whole)
            assert set(got) == {tx.id for tx in [*readings, blobbed]}
            for tx in erased:
                assert got[tx.id]["erased_by"] == by[tx.id]
                assert got[tx.id]["sidecar"] is None and not got[tx.id]["blob"]
            for tx in kept:
                assert got[tx.id]["erased_by"] is None
                assert bytes.fromhex(got[tx.id]["sidecar"]) == tx.sidecar
            # the grantee keeps its wrap of the range-erased stream; of the other, nothing
            async with signed_in(url, grantee.signing) as client:
                left = await client.call("get_patient_records", stream=ranged.public.hex())
                assert [bytes.fromhex(w["wrap"]) for w in left["wraps"]] == [grants[0].sidecar]
                with pytest.raises(ApiError) as refused:
                    await client.call("get_patient_records", stream=whole.public.hex())
                assert refused.value.code == NO_CONSENT
            async with open_client(url) as anonymous:
                stream = await anonymous.call("get_stream", stream=whole.public.hex())
                assert stream["erased"] and stream["grants"] == []
                announced = stream["announcement"]  # public metadata; its wraps are gone
                assert announced is None or not decode_tx(bytes.fromhex(announced)).sidecar
                # receipts still prove each erased reading existed, offline, from the genesis
                for tx in erased:
                    receipt = await anonymous.call("get_receipt", id=tx.id.hex())
                    proven, _ = verify_receipt(receipt, genesis)
                    assert proven.id == tx.id and not proven.sidecar

        # a node that joins afterwards syncs the blocks as they are stored now: stripped
        status = await net.call("node1", "get_tx_status", id=erasures[1].id.hex())
        newcomer = await net.add_node()
        await net.wait_for_height(status["height"], names=[newcomer], timeout_s=30)
        homes = [Path(net.node(name).home) for name in net.names]

        # once each node has compacted, no piece of an erased payload or wrap is in its
        # LevelDB files, nor anywhere else in its home (logs, audit log, consensus WAL)
        gone = [tx.sidecar for tx in erased if tx.sidecar] + [blob, grants[1].sidecar]
        for home in homes:
            async def compacted(home: Path = home) -> bool:
                files = files_under(home)
                return not any(present(files, secret) for secret in gone)

            await until(f"compaction in {home}", compacted, COMPACTION_TIMEOUT_S)
            files = files_under(home / "data")
            for tx in kept:
                assert present(files, tx.sidecar), "a kept payload left the files"
            assert present(files, grants[0].sidecar), "the range erasure took a wrap"



async def records(client: ApiClient, stream: Stream) -> dict[bytes, dict[str, Any]]:
    """Every reading of ``stream`` the node answers its key with, by tx id."""
    got = await client.call("get_patient_records", stream=stream.public.hex())
    assert got["cursor"] is None
    return {decode_tx(bytes.fromhex(entry["tx"])).id: entry for entry in got["readings"]}
