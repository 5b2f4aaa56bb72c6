"""Running the patient's commands against a real node in this process: each command runs in a
worker thread (it calls ``trio.run`` itself) while the node's trio loop keeps serving."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import typer
from click.testing import Result
from typer.testing import CliRunner

from iomtnode.cli.audit import audit
from iomtnode.cli.device import device_show
from iomtnode.cli.devicesend import device_send
from iomtnode.cli.patient import patient_app
from iomtnode.cli.records import records_app
from iomtnode.client import open_client
from iomtnode.core.crypto import SigningKey
from iomtnode.core.tx import SignedTx
from iomtnode.home import write_key

from ..conftest import RunningNode
from ..core.sealkit import admit

COMMIT_WAIT_S = 20.0

# the app's command groups, without its callback (which configures this process's logs)
app = typer.Typer()
app.add_typer(patient_app, name="patient")
app.add_typer(records_app, name="records")
device = typer.Typer()
device.command("send")(device_send)
device.command("show")(device_show)
app.add_typer(device, name="device")
app.command("audit")(audit)


@pytest.fixture(autouse=True)
def logs_beside_the_commands() -> Iterator[None]:
    """The node's logs go to the test's stderr as it is now, not to sys.stdout as it is when
    they are written (by default), which is a command's stdout while one runs."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield
    structlog.configure(**saved)


async def cli(*args: str | Path) -> Result:
    """``iomtnode <args>``, run in a worker thread."""
    argv = [str(a) for a in args]
    return await trio.to_thread.run_sync(lambda: CliRunner().invoke(app, argv))


async def ok(*args: str | Path) -> str:
    """The command's stdout; fails the test (with its output) unless it exits 0."""
    result = await cli(*args)
    assert result.exit_code == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


async def committed(node: RunningNode, tx: SignedTx) -> int:
    """Submit ``tx`` and wait until it is committed; its height."""
    async with open_client(node.url) as client:
        await client.call("submit_tx", tx=tx.raw.hex())
        with trio.fail_after(COMMIT_WAIT_S):
            while True:
                status = await client.call("get_tx_status", id=tx.id.hex())
                assert status["state"] in ("pending", "committed"), status
                if status["state"] == "committed":
                    return status["height"]
                await trio.sleep(0.05)


async def admitted_device(node: RunningNode, stream: bytes, path: Path) -> SigningKey:
    """A device key written to ``path``, admitted by the node's authority to ``stream``."""
    device = SigningKey.generate()
    write_key(path, device)
    await committed(node, admit(node.authority, device.public, stream, node.chain_id))
    return device
