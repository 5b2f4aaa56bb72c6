"""Simulated medical devices: realistic vitals, sealed to their stream's epoch key, signed by
the device: the path of the real product (docs/privacy.md).

Each device follows a seeded random walk around a plausible baseline, so runs are
reproducible. Each device records into a stream of its own (one simulated patient's scope);
the simulator plays the patient too: it holds the stream key, announces epoch 1 and seals
every reading to it, padded to its size class, so the chain sees only the commitment and the
ciphertext travels beside the signed reading. (A real patient derives its stream and epoch
keys from one root secret, see :mod:`iomtnode.patient.keys`; the simulator draws them at
random from its seed, which is cheaper and reads the same on the ledger.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..core.crypto import SigningKey
from ..core.payload import profile_hash, wraps_hash
from ..core.tx import AdmitDevice, EpochAnnounce, Reading, SignedTx, sign_tx
from ..patient import plaintext as pt
from ..patient.keys import epoch_public
from ..patient.seal import seal_reading
from ..patient.wraps import wraps_sidecar

# kind -> (baseline low, baseline high, step, min, max); integer units:
# bpm, % SpO2, centi-degrees Celsius, mmHg systolic (diastolic follows at ~0.65)
VITALS: dict[str, tuple[int, int, int, int, int]] = {
    "heart_rate": (58, 95, 2, 30, 220),
    "spo2": (94, 99, 1, 70, 100),
    "temperature": (3620, 3740, 5, 3300, 4300),
    "blood_pressure": (105, 135, 2, 70, 220),
}
PLAIN_KINDS = {"heart_rate": pt.HEART_RATE, "spo2": pt.SPO2,
               "temperature": pt.BODY_TEMPERATURE, "blood_pressure": pt.BLOOD_PRESSURE}
DEVICE_CLASSES: dict[str, tuple[str, ...]] = {
    "wearable": ("heart_rate", "spo2"),
    "bedside_monitor": ("heart_rate", "spo2", "blood_pressure", "temperature"),
    "thermometer": ("temperature",),
}
PLAIN_CLASSES = {"wearable": pt.WEARABLE, "bedside_monitor": pt.BEDSIDE_MONITOR,
                 "thermometer": pt.THERMOMETER}
MANUFACTURER = "iomtnode-sim"
NO_WRAPS = wraps_sidecar([])  # the wraps of an epoch with no grantees


@dataclass
class SimDevice:
    key: SigningKey
    stream: SigningKey  # the simulated patient's stream key
    epoch_secret: bytes  # X25519 secret of the stream's epoch 1 (the patient's)
    device_class: str
    rng: random.Random
    seq: int = 0
    epoch: int = 1
    values: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in DEVICE_CLASSES[self.device_class]:
            low, high, *_ = VITALS[kind]
            self.values[kind] = self.rng.randint(low, high)
        self.epoch_public = epoch_public(self.epoch_secret)
        self.profile_salt = self.rng.randbytes(16)

    def admission(self, authority: SigningKey, chain_id: str) -> SignedTx:
        body = AdmitDevice(authority.public, self.key.public, self.stream.public,
                           profile_hash(self.profile_salt, self.device_class, MANUFACTURER))
        return sign_tx(body, authority, chain_id)

    def epoch_announcement(self, chain_id: str) -> SignedTx:
        """The stream's epoch 1, with no grantees (signed by the stream key)."""
        body = EpochAnnounce(self.stream.public, self.epoch, self.epoch_public, [],
                             wraps_hash(NO_WRAPS))
        return sign_tx(body, self.stream, chain_id, NO_WRAPS)

    def next_plaintext(self, now_ms: int) -> pt.Plaintext:
        kinds = DEVICE_CLASSES[self.device_class]
        kind = kinds[self.seq % len(kinds)]
        _, _, step, lo, hi = VITALS[kind]
        value = min(hi, max(lo, self.values[kind] + self.rng.randint(-step, step)))
        self.values[kind] = value
        values = (value, value * 65 // 100) if kind == "blood_pressure" else (value,)
        return pt.Plaintext(PLAIN_KINDS[kind], now_ms, values,
                            device_class=PLAIN_CLASSES[self.device_class])

    def next_reading(self, chain_id: str, now_ms: int) -> SignedTx:
        plain = self.next_plaintext(now_ms)
        self.seq += 1
        size_class, commitment, sidecar = seal_reading(
            chain_id, self.stream.public, self.key.public, self.seq, self.epoch,
            self.epoch_public, plain)
        body = Reading(self.key.public, self.seq, now_ms, self.epoch, size_class, commitment)
        return sign_tx(body, self.key, chain_id, sidecar)


def make_devices(count: int, seed: int | None = None) -> list[SimDevice]:
    """``count`` devices, each with a stream of its own (deterministic keys when ``seed`` is
    given)."""
    rng = random.Random(seed)
    classes = sorted(DEVICE_CLASSES)
    devices = []
    for i in range(count):
        if seed is None:
            key, stream = SigningKey.generate(), SigningKey.generate()
            secret = random.SystemRandom().randbytes(32)
        else:
            key = SigningKey(rng.randbytes(32))
            stream = SigningKey(rng.randbytes(32))
            secret = rng.randbytes(32)
        devices.append(SimDevice(key, stream, secret, classes[i % len(classes)],
                                 random.Random(rng.random())))
    return devices
