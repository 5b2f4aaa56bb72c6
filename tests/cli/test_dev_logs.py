"""``iomtnode dev`` shows one live progress line: on a terminal the node's log line per block
(20 a second) drowned it, so dev logs warnings and errors only unless ``--log-level`` says
otherwise; and an --api it cannot listen on is one error line, not a traceback."""

from __future__ import annotations

import socket

import structlog
from typer.testing import CliRunner

import iomtnode.devmode
from iomtnode.cli import app


async def fake_run_dev(*_: object) -> None:
    log = structlog.get_logger("test")
    log.info("block_finalized", height=1)
    log.warning("something_refused")


def test_dev_logs_warnings_only_unless_told(monkeypatch):
    monkeypatch.setattr(iomtnode.devmode, "run_dev", fake_run_dev)
    quiet = CliRunner().invoke(app, ["--log-json", "dev", "--duration", "1"])
    assert quiet.exit_code == 0, quiet.output
    assert "something_refused" in quiet.stderr and "block_finalized" not in quiet.stderr
    told = CliRunner().invoke(app, ["--log-json", "--log-level", "info", "dev"])
    assert told.exit_code == 0, told.output
    assert "block_finalized" in told.stderr


def test_dev_on_a_port_in_use_says_so_in_one_line():
    # it ended in a Python traceback (an exception group around ListenError)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["dev", "--api", f"127.0.0.1:{port}", "--duration", "1"])
    assert result.exit_code == 1, result.output
    assert result.stderr.endswith(
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n")
    assert "Traceback" not in result.output
