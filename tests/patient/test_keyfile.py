"""Key files: mode 0600, never overwritten, and every malformed file refused in one line."""

from __future__ import annotations

import json
import os
import stat

import pytest

from iomtnode.patient.keyfile import (
    KeyFileError,
    load_grantee,
    load_patient,
    write_grantee,
    write_patient,
)
from iomtnode.patient.keys import GranteeKeys, new_root


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_patient_key_file_round_trips_with_mode_0600(tmp_path):
    root = new_root()
    path = tmp_path / "patient.json"
    old = os.umask(0)  # even a permissive umask gives 0600
    try:
        write_patient(path, root)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert load_patient(path) == root
    assert json.loads(path.read_text()) == {"type": "iomt-patient", "root": root.hex()}


def test_grantee_key_file_round_trips_with_mode_0600(tmp_path):
    keys = GranteeKeys.generate()
    path = tmp_path / "grantee.json"
    write_grantee(path, keys)
    assert mode(path) == 0o600
    loaded = load_grantee(path)
    assert (loaded.grantee, loaded.box_public, loaded.box_secret) == (
        keys.grantee, keys.box_public, keys.box_secret)
    assert set(json.loads(path.read_text())) == {"type", "sign_seed", "box_secret"}


def test_a_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "patient.json"
    root = new_root()
    write_patient(path, root)
    with pytest.raises(KeyFileError, match="never overwritten"):
        write_patient(path, new_root())
    with pytest.raises(KeyFileError, match="never overwritten"):
        write_grantee(path, GranteeKeys.generate())
    assert load_patient(path) == root


GOOD_HEX = "ab" * 32
MALFORMED = [
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"root": GOOD_HEX}).encode(), "type is None"),
    (json.dumps({"type": "iomt-grantee", "root": GOOD_HEX}).encode(), "type is 'iomt-grantee'"),
    (json.dumps({"type": "iomt-patient"}).encode(), "missing"),
    (json.dumps({"type": "iomt-patient", "root": GOOD_HEX, "x": 1}).encode(), "unknown"),
    (json.dumps({"type": "iomt-patient", "root": "ab" * 31}).encode(), "root is not 32"),
    (json.dumps({"type": "iomt-patient", "root": "zz" * 32}).encode(), "root is not 32"),
    (json.dumps({"type": "iomt-patient", "root": 5}).encode(), "root is not 32"),
    (b" " * 5000, "larger than"),
    # a device key given for the patient's: it said "not JSON: Expecting value: line 1 ..."
    (GOOD_HEX.encode() + b"\n", "a device's or node's key (a hex seed); the key file needed "
                                 "here is one iomtnode patient keygen makes"),
]


@pytest.mark.parametrize(("content", "problem"), MALFORMED)
def test_a_malformed_patient_file_is_refused_naming_file_and_problem(tmp_path, content,
                                                                    problem):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as info:
        load_patient(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize("document", [
    {"type": "iomt-grantee", "sign_seed": GOOD_HEX},
    {"type": "iomt-grantee", "sign_seed": GOOD_HEX, "box_secret": "00"},
    {"type": "iomt-patient", "sign_seed": GOOD_HEX, "box_secret": GOOD_HEX},
])
def test_a_malformed_grantee_file_is_refused(tmp_path, document):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match=str(path)):
        load_grantee(path)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read"):
        load_patient(tmp_path / "absent.json")
    with pytest.raises(KeyFileError):
        load_patient(tmp_path)


@pytest.mark.parametrize("open_mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_open_to_other_users_is_refused(tmp_path, open_mode):
    patient, grantee = tmp_path / "patient.json", tmp_path / "grantee.json"
    write_patient(patient, new_root())
    write_grantee(grantee, GranteeKeys.generate())
    for path, load in ((patient, load_patient), (grantee, load_grantee)):
        os.chmod(path, open_mode)
        with pytest.raises(KeyFileError) as info:
            load(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert f"chmod 600 {path}" in message
        os.chmod(path, 0o600)
        load(path)
