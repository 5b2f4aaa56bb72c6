"""``iomtnode device admit`` by a second authority that left out the first one's salt: the
node's refusal (1012) says what to give."""

from __future__ import annotations

from typer.testing import CliRunner

import iomtnode.cli.device as device_cli
from iomtnode.cli import app
from iomtnode.client import ApiError
from iomtnode.home import init_home

REFUSAL = ("this approval names a different stream or profile than the pending ones for the "
           "same device")


def admit(tmp_path, monkeypatch, *extra: str):
    home = init_home(tmp_path / "authority")

    async def refused(*args, **kwargs):  # as the client raises it: from its nursery
        raise ExceptionGroup("Exceptions from Trio nursery", [ApiError(1012, REFUSAL)])

    monkeypatch.setattr(device_cli, "call", refused)
    return CliRunner().invoke(app, ["device", "admit", "ab" * 32, "--stream", "cd" * 32,
                                    "--home", str(home.path), *extra])


def test_a_second_approval_without_the_salt_is_told_to_give_it(tmp_path, monkeypatch):
    # each approval draws a salt of its own unless given one: the second authority got only
    # "names a different stream or profile", and nothing said the salt was the difference
    result = admit(tmp_path, monkeypatch)
    assert result.exit_code == 1, result.output
    assert REFUSAL in result.stderr and "(code 1012)" in result.stderr
    assert "--profile-salt" in result.stderr


def test_with_a_salt_given_the_refusal_is_the_nodes(tmp_path, monkeypatch):
    result = admit(tmp_path, monkeypatch, "--profile-salt", "00" * 16)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: the node refused: {REFUSAL} (code 1012)\n"
