"""Patients on a localnet of real node processes, and a scanner for bytes that must not be
there (docs/privacy.md, sections 4 and 5).

A :class:`Patient` derives everything from a root (``patient.keys``): an identity key that
never leaves it, and a stream per scope whose devices are admitted by an authority and whose
epoch 1 is announced. Readings are sealed with ``patient.seal`` as a device does. The
scanner looks for needles, raw and hex-encoded, in named byte strings (files, logs, API
answers); every waiting loop here polls a condition under a deadline.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plyvel
import trio

from iomtnode.client import ApiClient, ApiError, open_client
from iomtnode.core import codec
from iomtnode.core.crypto import SigningKey
from iomtnode.core.payload import profile_hash, wraps_hash
from iomtnode.core.tx import AdmitDevice, EpochAnnounce, Reading, SignedTx, sign_tx
from iomtnode.patient import keys
from iomtnode.patient import plaintext as pt
from iomtnode.patient.seal import seal_reading
from iomtnode.sim.vitals import PLAIN_KINDS, VITALS

FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "1.0", "IOMTNODE_BLOCK_INTERVAL_S": "0.05"}
NO_WRAPS = codec.encode([])
POLL_S = 0.1  # how often a condition on the nodes is checked again
COMMIT_TIMEOUT_S = 30.0  # a block takes well under a second; a loaded machine is slow
SUBMIT_BATCH = 100  # readings per submit_readings call (the API's limit is higher)
STATUS_BATCH = 256  # ids per get_tx_status call
MIN_NEEDLE_BYTES = 4  # shorter needles would match by chance in megabytes of files

# the examples: heart rates 78 and 128, systolic 118 and 202 sealed to different sizes
# before payloads were padded
EXAMPLES = {"heart_rate": {78, 128}, "blood_pressure": {118, 202}}


def spot_values() -> dict[int, list[tuple[int, ...]]]:
    """Values of each vital kind over the simulator's range (its lowest, middle and highest,
    and the issue's examples), by plaintext kind; blood pressure with its diastolic."""
    found = {}
    for name, (_, _, _, low, high) in VITALS.items():
        points = sorted({low, (low + high) // 2, high} | EXAMPLES.get(name, set()))
        found[PLAIN_KINDS[name]] = [(v, v * 65 // 100) if name == "blood_pressure" else (v,)
                                    for v in points]
    return found


SPOT_VALUES = spot_values()
KIND_NAMES = ("heart_rate", "spo2", "temperature", "blood_pressure", "body_temperature")


@dataclass
class Device:
    key: SigningKey
    device_class: int
    seq: int = 0


@dataclass
class Stream:
    key: SigningKey
    root: bytes  # the patient's, which every epoch of this stream derives from
    scope: str
    devices: list[Device]
    epoch_secret: bytes
    epoch_public: bytes

    @property
    def public(self) -> bytes:
        return self.key.public


@dataclass
class SealedReading:
    tx: SignedTx
    stream: Stream
    plain: pt.Plaintext


@dataclass
class Patient:
    """A patient's root and what derives from it on one chain: a stream per scope."""

    root: bytes
    chain_id: str
    streams: dict[str, Stream] = field(default_factory=dict)

    @classmethod
    def make(cls, chain_id: str, scopes: Mapping[str, Sequence[int]]) -> Patient:
        """A new patient with a stream per scope, each with devices of the given classes."""
        patient = cls(keys.new_root(), chain_id)
        for scope, classes in scopes.items():
            stream = keys.derive_stream(patient.root, chain_id, scope)
            secret, public = keys.epoch_keypair(keys.epoch_state(patient.root, stream.public, 1))
            patient.streams[scope] = Stream(stream, patient.root, scope, [
                Device(SigningKey.generate(), c) for c in classes], secret, public)
        return patient

    @property
    def identity(self) -> bytes:
        """``I``'s public key: the patient's identity, which no node may ever hold."""
        return keys.derive_identity(self.root).public

    def admissions(self, authority: SigningKey) -> list[SignedTx]:
        txs = []
        for stream in self.streams.values():
            for device in stream.devices:
                profile = profile_hash(os.urandom(16), pt.DEVICE_CLASS_NAMES[device.device_class],
                                       "acme")
                txs.append(sign_tx(AdmitDevice(authority.public, device.key.public,
                                               stream.public, profile), authority, self.chain_id))
        return txs

    def epochs(self) -> list[SignedTx]:
        """Epoch 1 of every stream, with no grantees."""
        return [sign_tx(EpochAnnounce(s.public, 1, s.epoch_public, [], wraps_hash(NO_WRAPS)),
                        s.key, self.chain_id, NO_WRAPS) for s in self.streams.values()]


def seal(stream: Stream, device: Device, ts_ms: int, plain: pt.Plaintext, chain_id: str,
         epoch: int = 1) -> SealedReading:
    """``plain`` sealed to the stream's ``epoch`` and signed by ``device`` (its next seq)."""
    device.seq += 1
    public = stream.epoch_public if epoch == 1 else keys.epoch_keypair(
        keys.epoch_state(stream.root, stream.public, epoch))[1]
    size_class, commit, sidecar = seal_reading(chain_id, stream.public, device.key.public,
                                               device.seq, epoch, public, plain)
    body = Reading(device.key.public, device.seq, ts_ms, epoch, size_class, commit)
    return SealedReading(sign_tx(body, device.key, chain_id, sidecar), stream, plain)


def every_vital(stream: Stream, device: Device, start_ms: int, chain_id: str
                ) -> list[SealedReading]:
    """A reading of every spot value of every vital kind, one millisecond apart."""
    found = []
    for kind, values in SPOT_VALUES.items():
        for value in values:
            ts = start_ms + len(found)
            plain = pt.Plaintext(kind, ts - 500, value, device_class=device.device_class)
            found.append(seal(stream, device, ts, plain, chain_id))
    return found


# submitting and waiting --------------------------------------------------------------------


async def submit(client: ApiClient, txs: Sequence[SignedTx]) -> None:
    """Submit ``txs`` (readings in batches, anything else one by one); every one must be
    accepted."""
    readings = [tx for tx in txs if type(tx.body) is Reading]
    for tx in txs:
        if type(tx.body) is not Reading:
            await client.call("submit_tx", tx=tx.raw.hex())
    for start in range(0, len(readings), SUBMIT_BATCH):
        batch = readings[start:start + SUBMIT_BATCH]
        result = await client.call("submit_readings", txs=[tx.raw.hex() for tx in batch])
        assert result["rejected"] == 0, result


async def wait_committed(clients: Iterable[ApiClient], ids: Sequence[bytes],
                         timeout_s: float = COMMIT_TIMEOUT_S) -> None:
    """Wait until every node behind ``clients`` reports each of ``ids`` committed."""
    with trio.fail_after(timeout_s):
        for client in clients:
            todo = [i.hex() for i in ids]
            while todo:
                found = []
                for start in range(0, len(todo), STATUS_BATCH):
                    found += await client.call("get_tx_status",
                                               ids=todo[start:start + STATUS_BATCH])
                bad = [s for s in found if s["state"] == "dropped"]
                assert not bad, bad
                todo = [s["id"] for s in found if s["state"] != "committed"]
                if todo:
                    await trio.sleep(POLL_S)


async def submit_and_wait(client: ApiClient, clients: Sequence[ApiClient],
                          txs: Sequence[SignedTx]) -> None:
    await submit(client, txs)
    await wait_committed(clients, [tx.id for tx in txs])


async def register(client: ApiClient, clients: Sequence[ApiClient], authority: SigningKey,
                   patients: Sequence[Patient]) -> list[SignedTx]:
    """Admit every patient's devices, then announce epoch 1 of every stream; both committed
    on every node (an epoch needs a stream with an admitted device). Returns them."""
    admissions = [t for p in patients for t in p.admissions(authority)]
    await submit_and_wait(client, clients, admissions)
    epochs = [t for p in patients for t in p.epochs()]
    await submit_and_wait(client, clients, epochs)
    return admissions + epochs


def now_ms() -> int:
    return int(time.time() * 1000)


# scanning ---------------------------------------------------------------------------------


def needle_forms(needles: Mapping[str, bytes]) -> dict[str, bytes]:
    """Each needle raw and as lower- and upper-case hex (how JSON answers and logs carry
    bytes)."""
    forms = {}
    for name, raw in needles.items():
        assert len(raw) >= MIN_NEEDLE_BYTES, f"needle {name} is too short to mean anything"
        forms[name] = raw
        forms[f"{name} (hex)"] = raw.hex().encode()
        forms[f"{name} (HEX)"] = raw.hex().upper().encode()
    return forms


def scan(corpus: Mapping[str, bytes], needles: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """``(where, needle)`` of every needle (in every form of :func:`needle_forms`) found in
    the corpus's byte strings."""
    forms = needle_forms(needles)
    return [(where, name) for where, data in corpus.items() for name, form in forms.items()
            if form in data]


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by path (a file deleted while listing is skipped:
    a running node's LevelDB replaces its files)."""
    found = {}
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file():
                found[str(path)] = path.read_bytes()
        except FileNotFoundError:
            continue
    return found


def leveldb_contents(data: Path) -> bytes:
    """Every key and value of the (closed) LevelDB in ``data``, decompressed: what a table
    file's compression could hide from a scan of its raw bytes."""
    db = plyvel.DB(str(data))
    try:
        return b"\n".join(key + b"\x00" + value for key, value in db.iterator())
    finally:
        db.close()


async def anonymous_answers(client: ApiClient, tx_ids: Sequence[bytes],
                            streams: Sequence[bytes], devices: Sequence[bytes]
                            ) -> dict[str, bytes]:
    """Every answer a client without any proven key gets about the chain: status, every
    block, a receipt and a status per transaction, each stream and its epoch, each device
    (refused), the authorities, the evidence."""
    answers: dict[str, Any] = {"status": await client.call("status")}
    height = answers["status"]["height"]
    for h in range(height + 1):
        answers[f"get_block {h}"] = await client.call("get_block", height=h)
    for tx_id in tx_ids:
        answers[f"get_receipt {tx_id.hex()}"] = await client.call("get_receipt", id=tx_id.hex())
        answers[f"get_tx_status {tx_id.hex()}"] = await client.call("get_tx_status",
                                                                    id=tx_id.hex())
    for stream in streams:
        answers[f"get_stream {stream.hex()}"] = await client.call("get_stream",
                                                                 stream=stream.hex())
        answers[f"get_stream_epoch {stream.hex()}"] = await client.call("get_stream_epoch",
                                                                       stream=stream.hex())
    for device in devices:  # a device's stream is for its parties only: refused here
        try:
            answers[f"get_device {device.hex()}"] = await client.call("get_device",
                                                                     id=device.hex())
        except ApiError as exc:
            answers[f"get_device {device.hex()}"] = {"code": exc.code, "message": exc.message,
                                                     "data": exc.data}
    answers["get_authorities"] = await client.call("get_authorities")
    answers["get_evidence"] = await client.call("get_evidence")
    return {what: json.dumps(answer).encode() for what, answer in answers.items()}


def windows(data: bytes, size: int = 32, count: int = 4) -> list[bytes]:
    """``count`` spread-out ``size``-byte pieces of ``data`` (random bytes: any one found
    means the bytes are there, even split by a storage format)."""
    step = max(1, (len(data) - size) // max(1, count - 1))
    return [data[i:i + size] for i in range(0, len(data) - size + 1, step)][:count]


@asynccontextmanager
async def signed_in(url: str, key: SigningKey) -> AsyncIterator[ApiClient]:
    """A client of the node at ``url`` that proved ``key``."""
    async with open_client(url) as client:
        await client.authenticate(key)
        yield client


async def until(what: str, check: Any, timeout_s: float) -> Any:
    """Poll the async ``check`` until it returns something truthy."""
    with trio.move_on_after(timeout_s):
        while True:
            found = await check()
            if found:
                return found
            await trio.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
