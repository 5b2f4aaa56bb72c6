"""Simulated medical devices: realistic vitals, sealed to the patient, signed by the device.

Each device follows a seeded random walk around a plausible baseline for its patient, so
runs are reproducible. Payloads are encrypted to the patient's key (a NaCl sealed box to
the curve25519 form of the patient's ed25519 key): the chain never holds plaintext vitals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from nacl.public import SealedBox
from nacl.signing import VerifyKey

from ..core import codec
from ..core.crypto import SigningKey
from ..core.tx import AdmitDevice, Reading, SignedTx, sign_tx

# kind -> (baseline low, baseline high, step, min, max); integer units:
# bpm, % SpO2, centi-degrees Celsius, mmHg systolic (diastolic follows at ~0.65)
VITALS: dict[str, tuple[int, int, int, int, int]] = {
    "heart_rate": (58, 95, 2, 30, 220),
    "spo2": (94, 99, 1, 70, 100),
    "temperature": (3620, 3740, 5, 3300, 4300),
    "blood_pressure": (105, 135, 2, 70, 220),
}
DEVICE_CLASSES: dict[str, tuple[str, ...]] = {
    "wearable": ("heart_rate", "spo2"),
    "bedside_monitor": ("heart_rate", "spo2", "blood_pressure", "temperature"),
    "thermometer": ("temperature",),
}


@dataclass
class SimDevice:
    key: SigningKey
    patient: SigningKey
    device_class: str
    rng: random.Random
    seq: int = 0
    values: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in DEVICE_CLASSES[self.device_class]:
            low, high, *_ = VITALS[kind]
            self.values[kind] = self.rng.randint(low, high)
        patient_box_key = VerifyKey(self.patient.public).to_curve25519_public_key()
        self._box = SealedBox(patient_box_key)

    def admission(self, authority: SigningKey, chain_id: str) -> SignedTx:
        body = AdmitDevice(authority.public, self.key.public, self.patient.public,
                           self.device_class, "iomtnode-sim")
        return sign_tx(body, authority, chain_id)

    def next_reading(self, chain_id: str, now_ms: int) -> SignedTx:
        kinds = DEVICE_CLASSES[self.device_class]
        kind = kinds[self.seq % len(kinds)]
        _, _, step, lo, hi = VITALS[kind]
        value = min(hi, max(lo, self.values[kind] + self.rng.randint(-step, step)))
        self.values[kind] = value
        measurement: list[int] = [value, value * 65 // 100] if kind == "blood_pressure" else [
            value
        ]
        payload = self._box.encrypt(codec.encode([now_ms, *measurement]))
        self.seq += 1
        body = Reading(self.key.public, self.seq, now_ms, kind, payload, b"")
        return sign_tx(body, self.key, chain_id)


def make_devices(count: int, seed: int | None = None) -> list[SimDevice]:
    """``count`` devices with fresh keys (deterministic keys when ``seed`` is given)."""
    rng = random.Random(seed)
    classes = sorted(DEVICE_CLASSES)
    devices = []
    for i in range(count):
        if seed is None:
            key, patient = SigningKey.generate(), SigningKey.generate()
        else:
            key = SigningKey(rng.randbytes(32))
            patient = SigningKey(rng.randbytes(32))
        devices.append(SimDevice(key, patient, classes[i % len(classes)],
                                 random.Random(rng.random())))
    return devices
