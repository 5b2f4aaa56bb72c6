"""IOMTNODE_* variables that set nothing: every variable iomtnode reads is known (one list,
:data:`iomtnode.config.KNOWN_VARIABLES`); any other is named with the closest known one,
refused by ``config validate`` and warned of by ``iomtnode run``, which starts anyway."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from iomtnode.bench.run import node_env
from iomtnode.config import KNOWN_VARIABLES, UnknownVariable, unknown_variables
from iomtnode.config.environment import OTHER_VARIABLES
from iomtnode.config.settings import KINDS, env_name
from iomtnode.home import init_home

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0  # a node process imports, opens its store and listens within this
STOP_TIMEOUT_S = 15.0
LITERAL = re.compile(r"\bIOMTNODE_[A-Z][A-Z0-9_]*[A-Z0-9]\b")


def test_a_misspelt_variable_is_named_with_the_closest_known_one() -> None:
    env = {"IOMTNODE_API_LISTN": "0.0.0.0:7545", "IOMTNODE_BOOTNODE": "a:1",
           "IOMTNODE_KEYFILE": "/run/key", "IOMTNODE_SERVICE_HOST": "10.0.0.1",
           "IOMTNODE_MAX_PEERS": "20", "IOMTNODE_HOME": "/h", "PATH": "/bin",
           "_IOMTNODE_COMPLETE": "complete_bash"}
    assert unknown_variables(env) == (
        UnknownVariable("IOMTNODE_API_LISTN", "IOMTNODE_API_LISTEN"),
        UnknownVariable("IOMTNODE_BOOTNODE", "IOMTNODE_BOOTNODES"),
        UnknownVariable("IOMTNODE_KEYFILE", "IOMTNODE_KEY_FILE"),
        UnknownVariable("IOMTNODE_SERVICE_HOST", None))  # another program's: no guess
    assert unknown_variables(env)[0].message == (
        "IOMTNODE_API_LISTN is not a variable iomtnode reads (in the environment): it sets "
        "nothing; did you mean IOMTNODE_API_LISTEN?")


def test_every_setting_and_every_other_reader_is_known() -> None:
    assert {env_name(name) for name in KINDS} | set(OTHER_VARIABLES) == KNOWN_VARIABLES
    assert unknown_variables(dict.fromkeys(KNOWN_VARIABLES, "")) == ()


def test_every_variable_the_code_names_is_known() -> None:
    """A variable iomtnode (or its image's entrypoint, or the bench's nodes) reads but that
    is missing from KNOWN_VARIABLES would be refused by ``config validate``: add it to
    OTHER_VARIABLES, saying who reads it."""
    sources = [*sorted((ROOT / "iomtnode").rglob("*.py")), ROOT / "Dockerfile",
               ROOT / "deploy" / "docker" / "entrypoint.sh"]
    named = {(name, str(path.relative_to(ROOT))) for path in sources
             for name in LITERAL.findall(path.read_text())}
    assert {name for name, _ in named} >= {"IOMTNODE_API_CA", "IOMTNODE_HOME"}  # the grep works
    assert [(n, p) for n, p in sorted(named) if n not in KNOWN_VARIABLES] == []
    assert set(node_env(16)) <= KNOWN_VARIABLES  # names the bench builds


async def test_run_warns_of_each_unknown_variable_and_starts_anyway(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home").path
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("IOMTNODE_")},
           "PYTHONUNBUFFERED": "1", "IOMTNODE_API_LISTN": "0.0.0.0:9999",
           "IOMTNODE_OTHER_TOOL": "1", "IOMTNODE_MAX_PEERS": "20"}
    command = [sys.executable, "-m", "iomtnode", "--log-json", "run", "--home", str(home),
               "--api", "127.0.0.1:0", "--p2p", "127.0.0.1:0"]
    events: list[dict] = []
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(partial(trio.run_process, command, env=env,
                                           stderr=subprocess.PIPE, check=False))
        try:
            with trio.fail_after(START_TIMEOUT_S):
                buffer = b""
                async for chunk in proc.stderr:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    events += [json.loads(line) for line in lines if line.startswith(b"{")]
                    if any(e["event"] == "node_started" for e in events):
                        break
        finally:
            proc.terminate()
            with trio.fail_after(STOP_TIMEOUT_S):
                await proc.wait()
    warned = [(e["name"], e["did_you_mean"], e["level"]) for e in events
              if e["event"] == "config_env_unknown"]
    assert warned == [("IOMTNODE_API_LISTN", "IOMTNODE_API_LISTEN", "warning"),
                      ("IOMTNODE_OTHER_TOOL", None, "warning")]
    started = [e for e in events if e["event"] == "node_started"]
    assert started and "9999" not in started[0]["api"]  # the misspelt value set nothing
