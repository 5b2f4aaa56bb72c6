"""`iomtnode simulate` on a chain that admits a device with several authorities' approvals
(a genesis from the ceremony: a majority by default): each --home approves; too few homes
is refused at once, before anything is sent (it waited 60 s, then blamed TLS)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from iomtnode.cli.load import simulate
from iomtnode.client import ApiError
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import decode_tx
from iomtnode.home import init_home
from iomtnode.sim import load
from iomtnode.sim.vitals import make_devices

CHAIN = "ward-net"
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(3)]

app = typer.Typer()
app.command("simulate")(simulate)
app.command("other")(lambda: None)  # two commands: the app keeps "simulate" as a name


@pytest.fixture
def homes(tmp_path: Path) -> list[Path]:
    genesis = Genesis(CHAIN, int(time.time() * 1000), tuple(k.public for k in KEYS), 2)
    return [init_home(tmp_path / f"h{i}", genesis=genesis, key=k).path
            for i, k in enumerate(KEYS)]


def test_fewer_homes_than_the_admission_threshold_are_refused_at_once(homes):
    for given in ([homes[0]], [homes[0], homes[0]]):  # one authority, however often named
        args = [a for h in given for a in ("--home", str(h))]
        result = CliRunner().invoke(app, ["simulate", *args, "--api", "127.0.0.1:1"])
        assert result.exit_code == 2, result.output
        assert ("admits a device with the approvals of 2 authorities (admission_threshold in "
                "its genesis), and 1 --home was given") in result.stderr


class Client:
    def __init__(self) -> None:
        self.approvals: list[tuple[bytes, bytes]] = []

    async def authenticate(self, key: SigningKey, chain_id: str) -> None:
        pass

    async def call(self, method: str, **params: Any) -> Any:
        if method == "get_device":
            return {"last_seq": 0}
        assert method == "submit_tx"
        body = decode_tx(bytes.fromhex(params["tx"])).body
        self.approvals.append((body.authority, body.device))
        if body.authority == KEYS[1].public and len(self.approvals) > 2:
            raise ApiError(1007, "already approved")  # told apart from other refusals
        return {"id": "00"}


async def test_each_home_approves_every_device(monkeypatch):
    async def announced(*args: object) -> None:
        pass

    monkeypatch.setattr(load, "announce_epochs", announced)
    client = Client()
    devices = make_devices(2, 1)
    await load.admit_devices(client, devices, KEYS[0], CHAIN, [KEYS[1], KEYS[2]])
    assert client.approvals == [(k.public, d.key.public) for d in devices for k in KEYS]
