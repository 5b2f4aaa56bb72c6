"""The patient's commands that need no node: key files (0600, never overwritten), the grantee's
key card, the stream key and certificate the authority's desk checks, and the refusals made
before anything is sent (a bad key card, a bad duration or date)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator

import pytest
import structlog
import typer
from typer.testing import CliRunner

from iomtnode.cli import app
from iomtnode.cli.patient import _next_epoch, duration_ms, iso_ms
from iomtnode.patient.keyfile import load_grantee, load_patient
from iomtnode.patient.keys import (
    EPOCHS_PER_STREAM,
    check_card,
    check_certificate,
    derive_identity,
    derive_stream,
    new_root,
)

CHAIN = "iomt-test"
CLOSED_API = "127.0.0.1:1"  # nothing listens: a command that refuses first never gets there


@pytest.fixture(autouse=True)
def logging_put_back() -> Iterator[None]:
    """The app's callback points structlog at the runner's stderr, closed after each invoke:
    the set-up is put back so later tests do not log to a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_patient_keygen_writes_a_0600_root_and_never_overwrites(tmp_path):
    path = tmp_path / "patient.key"
    result = invoke("patient", "keygen", "--out", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"key_file": str(path)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    root = load_patient(path)
    again = invoke("patient", "keygen", "--out", str(path))
    assert again.exit_code == 2 and "never overwritten" in again.stderr
    assert load_patient(path) == root


def test_grantee_keygen_prints_a_card_that_checks(tmp_path):
    path = tmp_path / "clinician.key"
    result = invoke("patient", "keygen", "--grantee", "--out", str(path))
    assert result.exit_code == 0, result.output
    keys = load_grantee(path)
    assert check_card(bytes.fromhex(result.stdout.strip())) == (keys.grantee, keys.box_public)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_card_prints_the_same_card_again_from_the_key_file(tmp_path):
    path = tmp_path / "clinician.key"
    made = json.loads(invoke("patient", "keygen", "--grantee", "--out", str(path),
                             "--json").stdout)
    again = invoke("patient", "card", "--key", str(path), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == made
    assert invoke("patient", "card", "--key", str(path)).stdout.strip() == made["card"]
    root = tmp_path / "patient.key"
    invoke("patient", "keygen", "--out", str(root))
    refused = invoke("patient", "card", "--key", str(root))  # a patient's key has no card
    assert refused.exit_code == 2 and str(root) in refused.stderr


def test_stream_prints_the_key_and_a_certificate_the_desk_checks(tmp_path):
    path = tmp_path / "patient.key"
    invoke("patient", "keygen", "--out", str(path))
    root = load_patient(path)
    result = invoke("patient", "stream", "--key", str(path), "--scope", "vitals",
                    "--chain-id", CHAIN, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    stream = derive_stream(root, CHAIN, "vitals").public
    assert doc["stream"] == stream.hex()
    assert check_certificate(bytes.fromhex(doc["certificate"])) == (
        derive_identity(root).public, CHAIN, stream, "vitals")
    ecg = invoke("patient", "stream", "--key", str(path), "--scope", "ecg", "--chain-id", CHAIN,
                 "--json")
    assert json.loads(ecg.stdout)["stream"] != doc["stream"]  # one stream per scope

    desk = invoke("patient", "check-certificate", doc["certificate"], "--json")
    assert desk.exit_code == 0 and json.loads(desk.stdout) == {
        "valid": True, "identity": derive_identity(root).public.hex(), "chain_id": CHAIN,
        "stream": stream.hex(), "scope": "vitals"}
    forged = bytearray.fromhex(doc["certificate"])
    forged[-1] ^= 1  # a bit of the identity's signature
    bad = invoke("patient", "check-certificate", forged.hex())
    assert bad.exit_code == 1 and bad.stdout.startswith("INVALID")


def test_check_certificate_names_a_non_hex_argument():
    # the operator is told which argument is wrong and what it must be, not Python's words
    for typo in ("zz", "abc"):  # not hex; an odd number of digits
        result = invoke("patient", "check-certificate", typo)
        assert result.exit_code == 2, result.output
        assert "error: CERTIFICATE must be hex" in result.stderr
        assert "fromhex" not in result.output


def test_grant_refuses_a_bad_card_or_duration_before_sending(tmp_path):
    path = tmp_path / "patient.key"
    invoke("patient", "keygen", "--out", str(path))
    card = invoke("patient", "keygen", "--grantee", "--out", str(tmp_path / "g")).stdout.strip()
    forged = bytearray.fromhex(card)
    forged[-1] ^= 1
    common = ["patient", "grant", "--key", str(path), "--scope", "vitals", "--api", CLOSED_API]
    bad_card = invoke(*common, "--card", forged.hex(), "--expires", "30d")
    assert bad_card.exit_code == 2 and "key card" in bad_card.stderr
    typo = invoke(*common, "--card", "zz", "--expires", "30d")
    assert typo.exit_code == 2 and "--card must be hex" in typo.stderr
    assert "fromhex" not in typo.output
    bad_time = invoke(*common, "--card", card, "--expires", "30 days")
    assert bad_time.exit_code == 2 and "--expires" in bad_time.stderr
    no_node = invoke(*common, "--card", card, "--expires", "30d")
    assert no_node.exit_code == 1 and "cannot reach" in no_node.stderr


def test_a_grantee_key_is_not_a_patient_key(tmp_path):
    invoke("patient", "keygen", "--grantee", "--out", str(tmp_path / "g"))
    result = invoke("patient", "epoch", "--key", str(tmp_path / "g"), "--scope", "vitals",
                    "--api", CLOSED_API)
    assert result.exit_code == 2 and "iomt-patient" in result.stderr


def test_durations_and_dates():
    assert duration_ms("30d") == 30 * 86_400_000
    assert duration_ms("90m") == 5_400_000 and duration_ms("3600s") == 3_600_000
    assert iso_ms("--since", "1970-01-02") == 86_400_000
    assert iso_ms("--since", "1970-01-01T01:00:00+01:00") == 0
    for text in ("0d", "30", "-1d", "1w", "3651d"):
        with pytest.raises(typer.Exit):
            duration_ms(text)


def test_a_stream_past_its_last_epoch_is_refused_as_the_ledger_would(capsys):
    with pytest.raises(typer.Exit) as raised:
        _next_epoch(new_root(), bytes(32), {"epoch": EPOCHS_PER_STREAM, "grants": []})
    assert raised.value.exit_code == 1  # the ledger's state, not a wrong option (2)
    assert "all its 65536 epochs" in capsys.readouterr().err


@pytest.mark.parametrize("grantee", [False, True])
def test_records_fetch_names_what_is_wrong_with_a_readers_key_file(tmp_path, grantee):
    # a patient's or a grantee's key file that others may read is refused for that, not as
    # 'neither a patient's nor a grantee's key file'; a file of neither kind is said to be so
    path = tmp_path / "reader.key"
    invoke("patient", "keygen", *(["--grantee"] if grantee else []), "--out", str(path))
    path.chmod(0o644)
    result = invoke("records", "fetch", "--as", str(path), "--stream", "00" * 32,
                    "--api", CLOSED_API)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: open to other users (mode 0644)")
    assert "neither" not in result.stderr
    other = tmp_path / "other.key"
    other.write_text('{"type": "iomt-device"}')
    other.chmod(0o600)
    result = invoke("records", "fetch", "--as", str(other), "--stream", "00" * 32,
                    "--api", CLOSED_API)
    assert result.exit_code == 2 and "neither a patient's nor a grantee's key file" in result.stderr


def test_records_fetch_refuses_a_range_that_ends_before_it_starts(tmp_path):
    """It printed nothing and exited 0, as if the stream held no reading in the range."""
    path = tmp_path / "patient.key"
    assert invoke("patient", "keygen", "--out", str(path)).exit_code == 0
    result = invoke("records", "fetch", "--as", str(path), "--scope", "vitals",
                    "--since-ms", "5", "--until-ms", "3", "--api", "127.0.0.1:1")
    assert result.exit_code == 2, result.output
    assert "--until-ms (3) is before --since-ms (5)" in result.stderr
