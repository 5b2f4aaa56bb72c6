"""``IOMTNODE_API_CA`` (exported for a network's TLS nodes, as docs/api.md says) applies to
wss:// APIs only: every ws:// command failed with "a CA file is for wss:// URLs". Given on
the command line with a ws:// API it is still refused, as a mistake."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from iomtnode.cli import app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    return path


def status(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["status", *args], env=env)


def test_an_exported_ca_does_not_stop_a_command_aimed_at_a_ws_node(ca):
    api = f"127.0.0.1:{free_port()}"  # nothing listens: the command gets as far as dialing
    result = status("--api", api, env={"IOMTNODE_API_CA": str(ca)})
    assert result.exit_code != 0
    assert "cannot reach the node" in result.stderr, result.stderr
    assert "CA file" not in result.stderr


def test_a_ca_given_on_the_command_line_for_a_ws_node_is_still_refused(ca):
    result = status("--api", f"ws://127.0.0.1:{free_port()}", "--api-ca", str(ca))
    assert result.exit_code == 2
    assert "a CA file is for wss:// URLs" in result.stderr


def test_an_exported_ca_is_used_for_a_wss_node(ca):
    result = status("--api", f"wss://127.0.0.1:{free_port()}",
                    env={"IOMTNODE_API_CA": str(ca)})
    assert result.exit_code != 0
    assert str(ca) in result.stderr  # the bad PEM is read (and refused) before dialing


def test_every_command_with_api_ca_declares_api_first():
    """The callback reads the API from the options parsed before it."""
    def leaves(command, path=""):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from leaves(sub, f"{path} {name}")
        else:
            yield path, [p.name for p in command.params]

    found = [(path, names) for path, names in leaves(typer.main.get_command(app))
             if "api_ca" in names]
    assert len(found) > 10
    for path, names in found:
        assert "api" in names and names.index("api") < names.index("api_ca"), path


@pytest.fixture
def audit_args(tmp_path: Path) -> list[str]:
    """A patient's key and a genesis: ``audit --verify`` gets as far as dialing."""
    from iomtnode.home import init_home

    key = tmp_path / "patient.key"
    made = CliRunner().invoke(app, ["patient", "keygen", "--out", str(key)])
    assert made.exit_code == 0, made.output
    home = init_home(tmp_path / "node", chain_id="iomt-test")
    return ["audit", "--verify", "--patient", str(key), "--scope", "vitals",
            "--genesis", str(home.genesis_path)]


@pytest.mark.parametrize("api", [[], ["--api", "127.0.0.1:{port}"]])
def test_an_exported_ca_does_not_stop_audit_aimed_at_a_ws_node(ca, audit_args, api):
    """``audit`` takes --api several times (a list): the exported CA was applied to its
    plain ws:// APIs, the default one too."""
    args = [a.format(port=free_port()) for a in api]
    result = CliRunner().invoke(app, [*audit_args, *args], env={"IOMTNODE_API_CA": str(ca)})
    assert "CA file" not in result.stderr, result.stderr


def test_an_exported_ca_serves_audit_s_wss_nodes_beside_a_ws_one(ca, audit_args):
    result = CliRunner().invoke(app, [*audit_args, "--api", f"127.0.0.1:{free_port()}",
                                      "--api", f"wss://127.0.0.1:{free_port()}"],
                                env={"IOMTNODE_API_CA": str(ca)})
    assert result.exit_code != 0
    assert "CA file is for" not in result.stderr, result.stderr
