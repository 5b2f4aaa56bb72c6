"""A reading's plaintext: what a device measured, encoded with layout 1 and sealed whole, so
the vital kind and the value are never in clear (docs/privacy.md, section 2)."""

from __future__ import annotations

from dataclasses import dataclass

from iomtnode.core import codec

LAYOUT = 1

# vital kinds (u8): what the plaintext's ``values`` mean
HEART_RATE = 1  # [beats per minute]
SPO2 = 2  # [oxygen saturation, %]
BODY_TEMPERATURE = 3  # [hundredths of a degree Celsius]
BLOOD_PRESSURE = 4  # [systolic mmHg, diastolic mmHg]
ECG = 16  # [sample rate Hz, leads, nV per LSB]; samples: int16 little-endian, lead-interleaved
KIND_NAMES = {HEART_RATE: "heart_rate", SPO2: "spo2", BODY_TEMPERATURE: "body_temperature",
              BLOOD_PRESSURE: "blood_pressure", ECG: "ecg"}
VALUE_COUNTS = {HEART_RATE: 1, SPO2: 1, BODY_TEMPERATURE: 1, BLOOD_PRESSURE: 2, ECG: 3}

# device classes (u8), for FHIR Device.type
WEARABLE, BEDSIDE_MONITOR, THERMOMETER, ECG_PATCH = 1, 2, 3, 4
DEVICE_CLASS_NAMES = {WEARABLE: "wearable", BEDSIDE_MONITOR: "bedside_monitor",
                      THERMOMETER: "thermometer", ECG_PATCH: "ecg_patch"}

MAX_VALUE = 2**32 - 1  # each value is an unsigned 32-bit integer


class PlaintextError(ValueError):
    """Bytes that are not a layout-1 plaintext, or a plaintext whose fields are out of range."""


@dataclass(frozen=True)
class Plaintext:
    """One measurement as the device took it."""

    kind: int
    measured_ms: int
    values: tuple[int, ...]
    samples: bytes = b""
    device_class: int = WEARABLE

    def __post_init__(self) -> None:
        if self.kind not in VALUE_COUNTS:
            raise PlaintextError(f"vital kind {self.kind} is not one of {sorted(VALUE_COUNTS)}")
        if len(self.values) != VALUE_COUNTS[self.kind]:
            wanted = VALUE_COUNTS[self.kind]
            raise PlaintextError(f"{KIND_NAMES[self.kind]} takes {wanted} "
                                 f"value{'' if wanted == 1 else 's'}, not {len(self.values)}")
        if not all(type(v) is int and 0 <= v <= MAX_VALUE for v in self.values):
            raise PlaintextError(f"values must be integers in 0..{MAX_VALUE}")
        if not 0 <= self.measured_ms < 2**64:
            raise PlaintextError("measured_ms must be a u64")
        if self.samples and self.kind != ECG:
            raise PlaintextError("only an ECG carries samples")
        if self.device_class not in DEVICE_CLASS_NAMES:
            raise PlaintextError(f"device class {self.device_class} is not one of "
                                 f"{sorted(DEVICE_CLASS_NAMES)}")

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def encode(self) -> bytes:
        return codec.encode([LAYOUT, self.kind, self.measured_ms, list(self.values),
                             self.samples, self.device_class])


def decode_plaintext(data: bytes) -> Plaintext:
    """The plaintext in ``data`` (unpadded); raises :class:`PlaintextError` with the reason."""
    try:
        value = codec.decode(data, max_bytes=len(data))
    except codec.DecodeError as exc:
        raise PlaintextError(f"plaintext: {exc}") from None
    if type(value) is not list or len(value) != 6 or value[0] != LAYOUT:
        raise PlaintextError("plaintext is not a layout-1 array of 6 fields")
    _, kind, measured_ms, values, samples, device_class = value
    if (type(kind) is not int or type(measured_ms) is not int or type(values) is not list
            or type(samples) is not bytes or type(device_class) is not int):
        raise PlaintextError("plaintext field of the wrong type")
    return Plaintext(kind, measured_ms, tuple(values), samples, device_class)
