"""Opening served readings on the reader's machine (no node): the patient opens every epoch; a
grantee opens exactly the epochs its wraps give (forward: those epochs; history: its epoch and
every earlier one) and lists the others as unreadable, with the reason; content that is not
the reading's, an erased reading and a forged entry are never opened or guessed."""

from __future__ import annotations

import pytest

from iomtnode.core.crypto import SigningKey
from iomtnode.core.payload import commitment
from iomtnode.core.tx import Grant, Reading, SignedTx, sign_tx
from iomtnode.patient import reader as rd
from iomtnode.patient import wraps as pw
from iomtnode.patient.keys import GranteeKeys, derive_stream, epoch_keypair, epoch_state, new_root
from iomtnode.patient.plaintext import BLOOD_PRESSURE, ECG, ECG_PATCH, HEART_RATE, Plaintext
from iomtnode.patient.seal import seal_reading

CHAIN = "iomt-test"
ROOT = new_root()
STREAM = derive_stream(ROOT, CHAIN, "vitals").public
DEVICE = SigningKey(bytes([7]) * 32)
CLINICIAN = GranteeKeys.generate()


def reading(seq: int, epoch: int, plain: Plaintext) -> SignedTx:
    public = epoch_keypair(epoch_state(ROOT, STREAM, epoch))[1]
    size_class, commit, sidecar = seal_reading(CHAIN, STREAM, DEVICE.public, seq, epoch, public,
                                               plain)
    body = Reading(DEVICE.public, seq, 1_000 + seq, epoch, size_class, commit)
    return sign_tx(body, DEVICE, CHAIN, sidecar if size_class == 0 else b"")


def entry(tx: SignedTx, *, sidecar: bytes | None = None, erased_by: bytes = b"",
          blob: bool = False) -> dict:
    side = tx.sidecar if sidecar is None else sidecar
    return {"tx": tx.leaf_bytes.hex(), "sidecar": side.hex() or None, "height": 5,
            "erased_by": erased_by.hex() or None, "size_class": tx.body.size_class, "blob": blob}


def wrap(epoch: int, mode: int, grantee: GranteeKeys = CLINICIAN) -> dict:
    w = pw.grant_wrap(ROOT, STREAM, epoch, mode, grantee.box_public)
    return {"epoch": epoch, "mode": mode, "wrap": w.hex(), "tx_id": "ab" * 32}


def opened(e: dict, ring, blob: bytes | None = None) -> rd.Opened | rd.Unreadable:
    return rd.open_served(rd.served(e, CHAIN), ring, CHAIN, STREAM, blob)


HR = Plaintext(HEART_RATE, 5, (72,))
BP = Plaintext(BLOOD_PRESSURE, 6, (120, 80))
TXS = [reading(1, 1, HR), reading(2, 2, BP), reading(3, 3, HR)]


def test_the_patient_opens_every_epoch():
    ring, problems = rd.keyring_for(ROOT, None, STREAM, [])
    assert problems == []
    assert [opened(entry(tx), ring).plain for tx in TXS] == [HR, BP, HR]


def test_a_forward_grantee_opens_only_the_epochs_it_was_wrapped():
    ring, problems = rd.keyring_for(None, CLINICIAN, STREAM, [wrap(2, pw.FORWARD)])
    assert problems == []
    results = [opened(entry(tx), ring) for tx in TXS]
    assert isinstance(results[1], rd.Opened) and results[1].plain == BP
    for r in (results[0], results[2]):  # before its grant; after it was revoked
        assert isinstance(r, rd.Unreadable) and "no key for epoch" in r.reason
    assert rd.to_json(results[1])["values"] == [120, 80]
    assert rd.to_json(results[2])["unreadable"].startswith("no key for epoch 3")


def test_a_history_grantee_opens_every_epoch_up_to_its_wrap_and_none_after():
    ring, _ = rd.keyring_for(None, CLINICIAN, STREAM, [wrap(2, pw.HISTORY)])
    results = [opened(entry(tx), ring) for tx in TXS]
    assert [type(r) for r in results] == [rd.Opened, rd.Opened, rd.Unreadable]


def test_wraps_that_do_not_open_are_reported_not_fatal():
    other = GranteeKeys.generate()
    bad = wrap(1, pw.FORWARD) | {"mode": pw.HISTORY}  # the wrap says forward inside
    ring, problems = rd.keyring_for(None, CLINICIAN, STREAM,
                                    [wrap(1, pw.FORWARD, other), bad, {"epoch": 1}])
    assert len(problems) == 3
    assert any("does not open" in p for p in problems) and any("mode" in p for p in problems)
    assert isinstance(opened(entry(TXS[0]), ring), rd.Unreadable)


def test_content_that_is_not_the_readings_is_never_opened():
    ring, _ = rd.keyring_for(ROOT, None, STREAM, [])
    other = TXS[2].sidecar  # a real ciphertext of the stream, of another reading
    result = opened(entry(TXS[0], sidecar=other), ring)
    assert isinstance(result, rd.Unreadable) and "not the reading's" in result.reason
    result = opened(entry(TXS[0], sidecar=b""), ring)
    assert isinstance(result, rd.Unreadable) and "no content" in result.reason


def test_an_erased_reading_says_by_which_erasure():
    ring, _ = rd.keyring_for(ROOT, None, STREAM, [])
    result = opened(entry(TXS[0], sidecar=b"", erased_by=bytes([9]) * 32), ring)
    assert isinstance(result, rd.Unreadable) and result.reason == f"erased by {'09' * 32}"


def test_a_ciphertext_moved_to_another_reading_of_the_stream_does_not_open():
    """Same epoch, same stream, valid commitment: only the associated data differs."""
    ring, _ = rd.keyring_for(ROOT, None, STREAM, [])
    original = TXS[0]
    moved = sign_tx(Reading(DEVICE.public, 9, 1_009, 1, 0, commitment(original.sidecar)),
                    DEVICE, CHAIN, original.sidecar)
    result = opened(entry(moved), ring)
    assert isinstance(result, rd.Unreadable) and "does not open" in result.reason


def test_a_forged_entry_is_refused():
    e = entry(TXS[0])
    forged = bytearray.fromhex(e["tx"])
    forged[-1] ^= 1
    with pytest.raises(rd.RecordsError, match="signature"):
        rd.served(e | {"tx": forged.hex()}, CHAIN)
    with pytest.raises(rd.RecordsError, match="height"):
        rd.served(e | {"height": -1}, CHAIN)
    body = Grant(STREAM, CLINICIAN.grantee, CLINICIAN.box_public, 10**13, 1, 0,
                 pw.wrap_hash(b"w" * 60), 1)
    grant = sign_tx(body, derive_stream(ROOT, CHAIN, "vitals"), CHAIN, b"w" * 60)
    with pytest.raises(rd.RecordsError, match="not a reading"):
        rd.served(e | {"tx": grant.leaf_bytes.hex()}, CHAIN)


def test_a_strip_opens_from_its_blob_and_not_without_it():
    strip = Plaintext(ECG, 7, (250, 1, 1000), bytes(2 * 250 * 20), ECG_PATCH)
    public = epoch_keypair(epoch_state(ROOT, STREAM, 1))[1]
    size_class, commit, blob = seal_reading(CHAIN, STREAM, DEVICE.public, 4, 1, public, strip)
    assert size_class == 1
    tx = sign_tx(Reading(DEVICE.public, 4, 1_004, 1, 1, commit), DEVICE, CHAIN)
    ring, _ = rd.keyring_for(ROOT, None, STREAM, [])
    result = opened(entry(tx, blob=True), ring, blob)
    assert isinstance(result, rd.Opened) and result.plain == strip
    assert rd.to_json(result)["samples"] == strip.samples.hex()
    missing = opened(entry(tx, blob=False), ring)
    assert isinstance(missing, rd.Unreadable) and "no content" in missing.reason
    lost = opened(entry(tx, blob=True), ring)
    assert isinstance(lost, rd.Unreadable) and "could not be fetched" in lost.reason
