"""Transactions: sign/decode round trips, tampering, and every field check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import fields, replace

from iomtnode.core import codec
from iomtnode.core import fields as f
from iomtnode.core import tx as tx_module
from iomtnode.core.crypto import BadSignatureError, Domain, blake2b256
from iomtnode.core.evidence import MAX_EVIDENCE_BYTES, make_evidence
from iomtnode.core.payload import commitment, profile_hash, wrap_hash, wraps_hash
from iomtnode.core.tx import (
    FORWARD,
    KIND_NAMES,
    MAX_GRANTEES,
    MAX_NOTE_BYTES,
    MAX_TX_BYTES,
    TX_TYPES,
    AdmitDevice,
    AuditAnchor,
    AuthorityVote,
    DeviceMaintenance,
    EpochAnnounce,
    Erase,
    Grant,
    MalformedTxError,
    Reading,
    ReportEvidence,
    RevokeDevice,
    RevokeGrant,
    RotateDeviceKey,
    SignedTx,
    TxBody,
    _envelope,
    body_fields,
    decode_body,
    decode_tx,
    has_sidecar,
    sign_tx,
    tx_to_json,
)
from iomtnode.core.txkinds import MAX_AUDIT_ANCHOR_RECORDS
from iomtnode.core.vote import VoteType, sign_vote

from .helpers import CHAIN_ID, key, pub, same
from .sealkit import sidecar_for

H = blake2b256(b"some hash")
SIDE = sidecar_for(pub("hr1"), 7)
PUBLIC = blake2b256(b"an epoch key")
WRAP = b"w" * 96
WRAPS = codec.encode([[pub("G"), WRAP]])
EVIDENCE = make_evidence(
    *(sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 3, 0, bytes([x]) * 32) for x in (1, 2))
).encode()

# one well-formed body per kind, and the name of the key that signs it
BODIES: list[tuple[str, TxBody]] = [
    ("hr1", Reading(pub("hr1"), 7, 1_700_000_000_000, 3, 0, commitment(SIDE))),
    ("A", AdmitDevice(pub("A"), pub("hr1"), pub("P"), profile_hash(H[:16], "wearable", "Acme"))),
    ("P", RevokeDevice(pub("P"), pub("hr1"), "lost", 3)),
    ("hr1", RotateDeviceKey(pub("hr1"), pub("hr1b"))),
    ("A", DeviceMaintenance(pub("A"), pub("hr1"), "calibration", b"sealed note", 5)),
    ("A", AuthorityVote(pub("A"), pub("B"), True, 9)),
    ("P", Grant(pub("P"), pub("G"), PUBLIC, 1_800_000_000_000, 3, FORWARD, wrap_hash(WRAP),
                1)),
    ("P", RevokeGrant(pub("P"), pub("H"), 2, 4, PUBLIC, [pub("G")], wraps_hash(WRAPS))),
    ("A", ReportEvidence(pub("A"), EVIDENCE)),
    ("P", EpochAnnounce(pub("P"), 3, PUBLIC, [pub("G")], wraps_hash(WRAPS))),
    ("P", Erase(pub("P"), pub("P"), 5, 10, b"", 4)),
    ("A", AuditAnchor(pub("A"), pub("N"), 0, 10, H)),
]
IDS = [KIND_NAMES[type(b)] for _, b in BODIES]
SIDECARS = {Reading: SIDE, Grant: WRAP, RevokeGrant: WRAPS, EpochAnnounce: WRAPS}


def signed(i: int) -> SignedTx:
    """The ``i``-th body signed, with its sidecar beside it if its kind has one."""
    name, body = BODIES[i]
    return sign_tx(body, key(name), CHAIN_ID, SIDECARS.get(type(body), b""))


def wire(body_list: list[Any], signature: bytes = bytes(64)) -> bytes:
    """A signed-tx envelope around an arbitrary (possibly malformed) body array."""
    return codec.encode([codec.encode(body_list), signature])


def body_list(body: TxBody, **changes: Any) -> list[Any]:
    values = dict(zip([f.name for f in fields(body)], body_fields(body), strict=True))
    values.update(changes)
    return [body.KIND, *values.values()]


def refused(raw: bytes, match: str | None = None) -> MalformedTxError:
    with pytest.raises(MalformedTxError, match=match) as info:
        decode_tx(raw)
    assert type(info.value) is MalformedTxError
    return info.value


def test_every_kind_is_covered() -> None:
    assert sorted(type(b).KIND for _, b in BODIES) == sorted(TX_TYPES) == list(range(1, 13))
    assert len({type(b).DOMAIN for _, b in BODIES}) == 12


# round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(len(BODIES)), ids=IDS)
def test_sign_decode_round_trip(i: int) -> None:
    tx = signed(i)
    back = decode_tx(tx.raw)
    assert back == tx
    assert back.body == BODIES[i][1]
    assert tx.id == blake2b256(tx.body_bytes)
    assert tx.body_bytes == codec.encode([type(tx.body).KIND, *body_fields(tx.body)])
    sidecar = [tx.sidecar] if has_sidecar(tx.body) else []
    assert codec.decode(tx.raw) == [tx.body_bytes, tx.signature, *sidecar]
    assert tx.sidecar == SIDECARS.get(type(tx.body), b"")
    assert decode_tx(tx.raw, complete=True) == tx  # a complete transaction, as submitted
    assert codec.decode(tx.leaf_bytes) == [tx.body_bytes, tx.signature]
    assert back.verify(CHAIN_ID) is None
    assert decode_body(tx.body_bytes) == tx.body
    assert tx.kind_name == IDS[i]


@pytest.mark.parametrize("i", range(len(BODIES)), ids=IDS)
def test_signature_is_bound_to_chain_and_kind(i: int) -> None:
    tx = signed(i)
    with pytest.raises(BadSignatureError):
        tx.verify("iomt-other")
    # the same digest signed in another domain does not pass as this kind
    other = next(d for d in Domain if d is not type(tx.body).DOMAIN)
    forged = replace(tx, signature=key(BODIES[i][0]).sign(other, CHAIN_ID, tx.id))
    with pytest.raises(BadSignatureError):
        forged.verify(CHAIN_ID)


def test_tx_to_json() -> None:
    tx = signed(0)
    view = tx_to_json(tx)
    assert view["type"] == "reading"
    assert view["id"] == tx.id.hex()
    assert view["device"] == pub("hr1").hex()
    assert view["seq"] == 7
    assert view["raw"] == tx.leaf_bytes.hex()  # never the sidecar
    assert tx.sidecar and SIDE.hex() not in str(view)


@pytest.mark.parametrize("i", range(len(BODIES)), ids=IDS)
def test_every_kinds_json_view_is_json_with_bytes_in_hex(i: int) -> None:
    """get_block, get_receipt and get_stream_epoch answer with this view: an epoch's or a
    revocation's grantees (a list of keys) are hex like every other key."""
    tx = signed(i)
    view = json.loads(json.dumps(tx_to_json(tx)))
    for name in tx.body.__struct_fields__:
        value = getattr(tx.body, name)
        if type(value) is list:
            assert view[name] == [item.hex() for item in value]
        elif type(value) is bytes:
            assert view[name] == value.hex()


@pytest.mark.parametrize("i", range(len(BODIES)), ids=IDS)
def test_sign_with_a_key_that_is_not_the_signer(i: int) -> None:
    _, body = BODIES[i]
    with pytest.raises(ValueError, match="must be signed by its signer"):
        sign_tx(body, key("X"), CHAIN_ID)


# tampering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(len(BODIES)), ids=IDS)
def test_tampering_with_any_byte_is_detected(i: int) -> None:
    tx = signed(i)
    outcomes = {"malformed": 0, "bad signature": 0}
    for pos in range(len(tx.raw)):
        for mask in (0x01, 0x80, 0xFF):
            raw = tx.raw[:pos] + bytes((tx.raw[pos] ^ mask,)) + tx.raw[pos + 1:]
            try:
                other = decode_tx(raw)
            except MalformedTxError:
                outcomes["malformed"] += 1
                continue
            assert other.raw == raw
            assert (other.body_bytes, other.signature) != (tx.body_bytes, tx.signature)
            with pytest.raises(BadSignatureError) as info:
                other.verify(CHAIN_ID)
            assert type(info.value) is BadSignatureError
            outcomes["bad signature"] += 1
    assert outcomes["malformed"] > 0
    assert outcomes["bad signature"] > 0


@pytest.mark.parametrize("i", range(len(BODIES)), ids=IDS)
def test_truncation_and_extension_are_malformed(i: int) -> None:
    raw = signed(i).raw
    for end in range(len(raw)):
        refused(raw[:end])
    refused(raw + b"\x00")


# the envelope ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (codec.encode([]), "2 or 3 fields"),
        (codec.encode([codec.encode([1]), bytes(64), b"s", b""]), "2 or 3 fields"),
        (codec.encode([codec.encode([1]), bytes(64), b""]), "sidecar is empty"),
        (codec.encode([codec.encode([1]), bytes(64), "side"]), "sidecar must be bytes"),
        (codec.encode(b"body"), "must be an array"),
        (codec.encode(["body", bytes(64)]), "must be bytes"),
        (codec.encode([codec.encode(BODIES[0][1].KIND), bytes(63)]), "64 bytes"),
        (codec.encode([codec.encode([1]), bytes(65)]), "64 bytes"),
        (codec.encode([b"", bytes(64)]), "empty input"),
        (b"\xc4\x00" * 5000, "exceeds the limit"),
    ],
)
def test_malformed_envelope(raw: bytes, match: str) -> None:
    refused(raw, match)


def test_oversized_transaction() -> None:
    raw = codec.encode([codec.encode(body_list(BODIES[0][1])), bytes(64), b"p" * MAX_TX_BYTES])
    assert len(raw) > MAX_TX_BYTES
    refused(raw, "exceeds the limit")


# body fields -------------------------------------------------------------------------------


def test_decoding_ignores_the_signature() -> None:
    # decode_tx only checks the form; a zero signature decodes and fails verify
    tx = decode_tx(wire(body_list(BODIES[0][1])))
    assert tx.body == BODIES[0][1]
    with pytest.raises(BadSignatureError):
        tx.verify(CHAIN_ID)


def _field_cases() -> list[Any]:
    """(kind index, field, bad value, message) for every field of every kind."""
    bad_key = [b"k" * 31, b"k" * 33, b"", "k" * 32, 7, None]
    bad_u64 = [-1, codec.INT_MIN, True, False, b"\x01", "1", None]
    bad_ident = ["", "Heart_rate", "1abc", "_a", "a" * 33, "heart-rate", "h\u00e9art", "a\n",
                 "a b", b"heart", 1]
    cases = []
    for i, (_, body) in enumerate(BODIES):
        assert len(fields(body)) == len(type(body).CHECKS)
        for fld in fields(body):
            value = getattr(body, fld.name)
            if fld.name in ("device", "authority", "stream", "grantee", "by", "new_key",
                            "subject", "reporter", "node"):
                bads = bad_key
            elif fld.name in ("box", "public"):  # an X25519 key: 32 bytes, not all zero
                bads = [*bad_key, bytes(32)]
            elif fld.name in ("seq", "ts_ms", "nonce", "expires_ms", "epoch", "first",
                              "since_ms", "until_ms"):
                bads = bad_u64
            elif fld.name == "count":  # 1 up to the records one anchor may cover
                bads = [*bad_u64, 0, MAX_AUDIT_ANCHOR_RECORDS + 1]
            elif fld.name in ("commitment", "profile_hash", "wrap_hash", "wraps_hash", "root"):
                bads = [b"h" * 31, b"h" * 33, b"", "h" * 32, None]
            elif fld.name == "request_hash":  # empty (the stream's own) or a hash
                bads = [b"h" * 31, b"h" * 33, "h" * 32, None]
            elif fld.name == "size_class":
                bads = [3, -1, 255, True, "0", None]
            elif fld.name == "mode":
                bads = [2, -1, True, "0", None]
            elif fld.name == "grantees":
                bads = [[pub("G"), pub("G")], sorted([pub("G"), pub("H")], reverse=True),
                        [b"k" * 31], sorted(pub(f"G{i}") for i in range(MAX_GRANTEES + 1)),
                        pub("G"), "G", None]
            elif fld.name == "action":
                bads = bad_ident
            elif fld.name == "add":
                bads = [1, 0, "yes", None]
            elif fld.name == "reason":
                bads = ["n" * (MAX_NOTE_BYTES + 1), "\u00e9" * (MAX_NOTE_BYTES // 2 + 1),
                        b"note", 1]
            elif fld.name == "note":  # sealed: bytes
                bads = [b"n" * (MAX_NOTE_BYTES + 1), "note", 1]
            elif fld.name == "evidence":
                bads = [b"e" * (MAX_EVIDENCE_BYTES + 1), b"\x01", EVIDENCE[:-1],
                        codec.encode([codec.decode(EVIDENCE)[0]] * 2), "e", 0]
            else:  # pragma: no cover - a new field needs a case here
                raise AssertionError(f"no bad values for {fld.name}")
            assert not any(same(value, bad) for bad in bads)
            for bad in bads:
                cases.append(pytest.param(
                    i, fld.name, bad, id=f"{IDS[i]}.{fld.name}={bad!r:.12}"))
    return cases


@pytest.mark.parametrize(("i", "name", "bad"), _field_cases())
def test_bad_field_value(i: int, name: str, bad: Any) -> None:
    _, body = BODIES[i]
    err = refused(wire(body_list(body, **{name: bad})))
    assert f"{IDS[i]}.{name}" in str(err)


@pytest.mark.parametrize(
    ("name", "value"),
    [("epoch", 0), ("epoch", codec.INT_MAX), ("size_class", 1), ("size_class", 2),
     ("seq", 0), ("seq", codec.INT_MAX), ("ts_ms", 0), ("ts_ms", codec.INT_MAX)],
)
def test_field_edges_that_are_allowed(name: str, value: Any) -> None:
    body = BODIES[0][1]
    assert getattr(decode_tx(wire(body_list(body, **{name: value}))).body, name) == value


def test_note_limit_counts_utf8_bytes() -> None:
    _, body = BODIES[2]
    ok = "\u00e9" * (MAX_NOTE_BYTES // 2)  # 2 bytes each: exactly at the limit
    assert decode_tx(wire(body_list(body, reason=ok))).body.reason == ok
    refused(wire(body_list(body, reason=ok + "x")), "longer than 256 bytes")


def test_oversized_integers_never_reach_the_wire() -> None:
    # msgpack has no integer above 2^64 - 1, so "oversized" can only happen locally
    too_big = replace(BODIES[0][1], seq=2**64)
    with pytest.raises(codec.EncodeError, match="outside"):
        sign_tx(too_big, key("hr1"), CHAIN_ID)
    top = decode_tx(wire(body_list(BODIES[0][1], seq=2**64 - 1))).body
    assert top.seq == 2**64 - 1
    with pytest.raises(f.FieldError, match="2\\^64"):
        f.u64("seq", 2**64)


def _index(kind: type) -> int:
    return next(i for i, (_, b) in enumerate(BODIES) if type(b) is kind)


@pytest.mark.parametrize(("since", "until"), [(5, 5), (6, 5), (f.U64_MAX, 0)])
def test_an_erasure_covers_a_range_that_is_not_empty(since: int, until: int) -> None:
    body = BODIES[_index(Erase)][1]
    refused(wire(body_list(body, since_ms=since, until_ms=until)), "since_ms must be before")
    whole = decode_tx(wire(body_list(body, since_ms=0, until_ms=f.U64_MAX))).body
    assert whole.whole_scope and not body.whole_scope


def test_an_audit_anchor_covers_at_least_one_record_and_at_most_the_limit() -> None:
    body = BODIES[_index(AuditAnchor)][1]
    for count in (1, MAX_AUDIT_ANCHOR_RECORDS):
        assert decode_tx(wire(body_list(body, count=count))).body.count == count


def test_an_authoritys_erasure_names_a_request_hash() -> None:
    body = BODIES[_index(Erase)][1]
    assert decode_tx(wire(body_list(body, by=pub("A"), request_hash=H))).body.request_hash == H


@pytest.mark.parametrize("kind", [0, 13, 255, -1, 2**40, True, "reading", b"\x01", None, [1]])
def test_unknown_kind(kind: Any) -> None:
    _, body = BODIES[0]
    refused(wire([kind, *body_fields(body)]), "unknown transaction kind|starting with its kind")


@pytest.mark.parametrize("body", [[], 1, b"", "x", None], ids=repr)
def test_body_not_an_array(body: Any) -> None:
    refused(codec.encode([codec.encode(body), bytes(64)]), "starting with its kind")


@pytest.mark.parametrize("i", range(len(BODIES)), ids=IDS)
def test_wrong_arity(i: int) -> None:
    full = body_list(BODIES[i][1])
    n = len(full) - 1
    refused(wire(full[:-1]), f"has {n} fields, got {n - 1}")
    refused(wire([*full, 0]), f"has {n} fields, got {n + 1}")
    refused(wire(full[:1]), f"has {n} fields, got 0")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes_raises_only_malformed(raw: bytes) -> None:
    try:
        tx = decode_tx(raw)
    except MalformedTxError as exc:
        assert type(exc) is MalformedTxError
    else:  # pragma: no cover - astronomically unlikely
        assert tx.raw == raw


_leaf = (st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | st.binary(max_size=40)
         | st.text(max_size=40) | st.sampled_from([pub("A"), "heart_rate", b""]))


@settings(max_examples=300, deadline=None)
@given(st.integers(-1, 13), st.lists(_leaf | st.lists(_leaf, max_size=2), max_size=8),
       st.binary(max_size=70))
def test_decode_arbitrary_bodies_raises_only_malformed(
    kind: int, args: list[Any], signature: bytes
) -> None:
    raw = codec.encode([codec.encode([kind, *args]), signature])
    try:
        tx = decode_tx(raw)
    except MalformedTxError as exc:
        assert type(exc) is MalformedTxError
    else:
        # whatever passes is a well-formed body of that kind with a 64-byte signature
        assert type(tx.body) is TX_TYPES[kind]
        assert len(signature) == 64
        assert body_fields(tx.body) == args


def test_evidence_verifies_both_votes_not_only_the_reporter() -> None:
    first, second = codec.decode(EVIDENCE)
    forged = bytearray(second)
    forged[-1] ^= 1  # the last byte of the second vote's signature
    body = ReportEvidence(pub("A"), codec.encode([first, bytes(forged)]))
    tx = decode_tx(sign_tx(body, key("A"), CHAIN_ID).raw)  # well-formed, reporter signed
    with pytest.raises(BadSignatureError, match="evidence vote"):
        tx.verify(CHAIN_ID)
    signed(_index(ReportEvidence)).verify(CHAIN_ID)
    assert signed(_index(ReportEvidence)).body.proof.validator == pub("B")


@given(st.binary(max_size=600), st.binary(min_size=60, max_size=70),
       st.none() | st.binary(max_size=400),
       st.sampled_from(["canonical", "bin16", "mutated"]), st.integers(0, 1100),
       st.integers(0, 255))
@settings(max_examples=600)
def test_the_envelope_fast_path_accepts_exactly_what_the_general_decoder_does(
        body: bytes, signature: bytes, sidecar: bytes | None, form: str, at: int,
        byte: int) -> None:
    """The fixed-layout split of ``[body, signature]`` and ``[body, signature, sidecar]``
    never accepts bytes that the canonical decoder refuses, nor returns other parts than it
    would."""
    parts = [body, signature] if sidecar is None else [body, signature, sidecar]
    raw = codec.encode(parts)
    if form == "bin16":  # the same values with the body's length in a bin 16 header
        raw = (bytes([0x90 + len(parts)]) + b"\xc5" + len(body).to_bytes(2, "big") + body
               + b"".join(codec.encode(p) for p in parts[1:]))
    elif form == "mutated" and raw:
        i = at % len(raw)
        raw = raw[:i] + bytes([byte]) + raw[i + 1:]
    fast = _envelope(raw)
    try:
        value = codec.decode(raw)
    except codec.DecodeError:
        value = None
    if fast is not None:
        assert value == [fast[0], fast[1], *([fast[2]] if fast[2] else [])]
        assert len(fast[1]) == 64
    elif (type(value) is list and len(value) in (2, 3) and all(type(v) is bytes for v in value)
          and len(value[1]) == 64 and (len(value) == 2 or value[2])):
        pytest.fail(f"the fast path refused a canonical envelope: {raw.hex()}")


_key_like = st.sampled_from([32, 31, 33, 0]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
_u64_like = st.sampled_from([0, 1, 127, 128, 255, 256, 2**32, 2**63, f.U64_MAX, -1, -2**63])
_text_like = st.sampled_from(["spo2", "a" * 32, "", "A", "a\n", "h\u00e9"])
_field_like = _u64_like | st.binary(max_size=40) | _text_like | st.none() | st.booleans()


@given(_key_like, _u64_like, _u64_like, _u64_like, st.sampled_from([0, 1, 2, 3, 255, -1]),
       st.sampled_from([0, 32, 31, 33]),
       st.lists(st.tuples(st.integers(0, 6), _field_like), max_size=2),
       st.sampled_from(["canonical", "mutated", "extra", "short"]), st.integers(0, 2000),
       st.integers(0, 255))
@settings(max_examples=600, deadline=None)
def test_the_reading_fast_path_accepts_exactly_what_the_general_decoder_does(
        device: bytes, seq: int, ts_ms: int, epoch: int, size_class: int, hash_size: int,
        swaps: list[tuple[int, Any]], form: str, at: int, byte: int) -> None:
    """msgspec's reading decoder, the fast path of ``decode_body``, never accepts a body
    that the general decoder refuses, and gives the same reading when it accepts."""
    args: list[Any] = [device, seq, ts_ms, epoch, size_class, b"h" * hash_size]
    for index, value in swaps:  # a field of another type or out of range
        args[index % 6] = value
    if form == "extra":
        args.append(0)
    elif form == "short":
        args.pop()
    try:
        body = codec.encode([Reading.KIND, *args])
    except codec.EncodeError:
        return
    if form == "mutated":
        i = at % len(body)
        body = body[:i] + bytes([byte]) + body[i + 1:]
    fast = tx_module._reading(body)
    try:
        general = tx_module._decode_any_body(body)
    except MalformedTxError:
        general = None
    if fast is not None:
        assert general == fast and type(fast) is Reading
    elif general is not None and body[:2] == tx_module._READING_HEADER:
        pytest.fail(f"the fast path refused a reading the general decoder accepts: {body.hex()}")


def test_the_reading_fast_path_takes_a_well_formed_reading() -> None:
    reading = next(b for _, b in BODIES if type(b) is Reading)
    assert tx_module._reading(tx_module.encode_body(reading)) == reading


@pytest.mark.parametrize("size_class", [3, 255, 2**64 - 1])
def test_a_reading_of_no_size_class_is_malformed(size_class: int) -> None:
    # docs/privacy.md: a size class outside 0..2 is a malformed body (1021 at admission), the
    # sidecar's size and presence are what 1026 (UnpaddedPayloadError) is for
    body = BODIES[_index(Reading)][1]
    refused(wire(body_list(body, size_class=size_class)), "size class 0, 1 or 2")
