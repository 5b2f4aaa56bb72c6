"""Key files: a patient's root and a grantee's keys, as small JSON files of mode 0600.

    {"type": "iomt-patient", "root": "<64 hex>"}
    {"type": "iomt-grantee", "sign_seed": "<64 hex>", "box_secret": "<64 hex>"}

Writing never overwrites (a lost root is lost for good); every malformed file, and a key file
other users may read or write, is refused with one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from iomtnode.core.crypto import SigningKey

from .keys import ROOT_BYTES, X25519_BYTES, GranteeKeys

PATIENT_TYPE = "iomt-patient"
GRANTEE_TYPE = "iomt-grantee"
KEYGEN = {PATIENT_TYPE: "iomtnode patient keygen",
          GRANTEE_TYPE: "iomtnode patient keygen --grantee"}  # what makes each kind
KEY_FILE_MODE = 0o600  # read and write by the owner only
MAX_KEY_FILE_BYTES = 4096  # a key file is under 200 bytes; anything larger is not one


class KeyFileError(ValueError):
    """A key file that cannot be read, is malformed, or would overwrite another."""


def _write(path: Path | str, document: dict[str, str]) -> None:
    path = Path(path)
    data = (json.dumps(document, indent=2) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path}: exists; a key file is never overwritten") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        os.fchmod(fd, KEY_FILE_MODE)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path | str, kind: str, fields: tuple[str, ...]) -> dict[str, bytes]:
    """The hex ``fields`` of a key file of ``kind``, each 32 bytes."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            st_mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(st_mode):
                raise KeyFileError(f"{path}: not a regular file")
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes; not a key file")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        if _is_hex_seed(data):  # the key files of devices and nodes
            raise KeyFileError(f"{path}: a device's or node's key (a hex seed); the key "
                               f"file needed here is one {KEYGEN[kind]} makes") from None
        raise KeyFileError(f"{path}: not JSON: {exc}") from None
    if type(document) is not dict:
        raise KeyFileError(f"{path}: not a JSON object")
    if document.get("type") != kind:
        raise KeyFileError(f"{path}: type is {document.get('type')!r}, expected {kind!r}")
    expected = {"type", *fields}
    if set(document) != expected:
        extra, missing = set(document) - expected, expected - set(document)
        raise KeyFileError(f"{path}: fields {sorted(missing)} missing, {sorted(extra)} unknown"
                           if missing else f"{path}: unknown fields {sorted(extra)}")
    values: dict[str, bytes] = {}
    for name in fields:
        text = document[name]
        try:
            raw = bytes.fromhex(text) if type(text) is str else None
        except ValueError:
            raw = None
        if raw is None or len(raw) != ROOT_BYTES:
            raise KeyFileError(f"{path}: {name} is not {ROOT_BYTES} bytes of hex")
        values[name] = raw
    if st_mode & (stat.S_IRWXG | stat.S_IRWXO):  # checked last: a malformed file says so
        raise KeyFileError(f"{path}: open to other users (mode {stat.S_IMODE(st_mode):04o}); a "
                           f"key file is the owner's alone: run: chmod 600 {path}")
    return values


def _is_hex_seed(data: bytes) -> bool:
    try:
        return len(bytes.fromhex(data.decode("ascii").strip())) == ROOT_BYTES
    except (UnicodeDecodeError, ValueError):
        return False


def write_patient(path: Path | str, root: bytes) -> None:
    """Write the patient's root ``R`` to a new file of mode 0600."""
    if len(root) != ROOT_BYTES:
        raise KeyFileError(f"{path}: a patient root is {ROOT_BYTES} bytes")
    _write(path, {"type": PATIENT_TYPE, "root": root.hex()})


def load_patient(path: Path | str) -> bytes:
    """The patient's root ``R`` from a patient key file."""
    return _read(path, PATIENT_TYPE, ("root",))["root"]


def write_grantee(path: Path | str, keys: GranteeKeys) -> None:
    """Write a grantee's signing seed and box secret to a new file of mode 0600."""
    if len(keys.box_secret) != X25519_BYTES:
        raise KeyFileError(f"{path}: a box secret is {X25519_BYTES} bytes")
    _write(path, {"type": GRANTEE_TYPE, "sign_seed": keys.signing.seed.hex(),
                  "box_secret": keys.box_secret.hex()})


def load_grantee(path: Path | str) -> GranteeKeys:
    """A grantee's keys from a grantee key file."""
    values = _read(path, GRANTEE_TYPE, ("sign_seed", "box_secret"))
    return GranteeKeys(SigningKey(values["sign_seed"]), values["box_secret"])
