"""``iomtnode run`` with settings it cannot use stops with one precise line, never a
traceback: a listener whose port is taken names its address."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from iomtnode.p2p.transport import ListenError, TcpTransport

RUN_TIMEOUT_S = 60  # a node that cannot bind stops within a second or two


def iomtnode(*args: str | Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOMTNODE_")}
    return subprocess.run([sys.executable, "-m", "iomtnode", *map(str, args)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env=environ | (env or {}))


@pytest.fixture
def taken_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_taken_port_is_a_listen_error_naming_the_address(taken_port):
    async with trio.open_nursery() as nursery:
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{taken_port}: "):
            await nursery.start(TcpTransport().listen, "127.0.0.1", taken_port,
                                lambda stream, remote: None, nursery)


@pytest.mark.parametrize("flag", ["--api", "--p2p"])
def test_run_on_a_taken_port_says_which_address_it_cannot_listen_on(tmp_path, taken_port,
                                                                    flag):
    home = tmp_path / "home"
    assert iomtnode("init", "--home", home).returncode == 0
    other = "--p2p" if flag == "--api" else "--api"
    run = iomtnode("run", "--home", home, flag, f"127.0.0.1:{taken_port}", other, "127.0.0.1:0")
    assert run.returncode == 1, run.stderr
    assert f"error: cannot listen on 127.0.0.1:{taken_port}: " in run.stderr
    assert "Traceback" not in run.stderr
    assert "cannot reach the node" not in run.stderr


def test_a_client_command_without_a_node_says_it_cannot_reach_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    status = iomtnode("status", "--api", f"127.0.0.1:{closed}")
    assert status.returncode == 1
    assert status.stderr.startswith("error: cannot reach the node: ")
    assert "bind" not in status.stderr  # a client binds nothing


def test_run_with_a_damaged_audit_log_says_so_without_a_traceback(tmp_path):
    from iomtnode.audit.log import AuditLog, segment_name
    from iomtnode.audit.record import AuditCall

    home = tmp_path / "home"
    assert iomtnode("init", "--home", home).returncode == 0
    with AuditLog(home / "audit") as log:
        log.append([AuditCall(1_000 + i, b"N" * 32, (), b"S" * 32, b"", "get_blob", 0, ())
                    for i in range(3)])
    path = home / "audit" / segment_name(0)
    data = path.read_bytes()
    first = 8 + int.from_bytes(data[:4], "big")
    path.write_bytes(data[first:])  # record 0 cut out: the log holds 1 and 2
    run = iomtnode("run", "--home", home, "--api", "127.0.0.1:0", "--p2p", "127.0.0.1:0")
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("error: the audit log cannot be opened: "), run.stderr
    assert "a record was removed or added" in run.stderr
    assert "Traceback" not in run.stderr


def _levels(stderr: str) -> set[str]:
    return {json.loads(line)["level"] for line in stderr.splitlines() if line.startswith("{")}


@pytest.mark.parametrize(("flags", "env", "expected"), [
    ((), {}, {"warning", "error"}),  # config.toml's log_level
    ((), {"IOMTNODE_LOG_LEVEL": "info"}, {"info"}),  # the environment over the file
    (("--log-level", "info"), {"IOMTNODE_LOG_LEVEL": "error"}, {"info"}),  # the flag over both
])
def test_run_logs_at_the_log_level_setting(tmp_path, taken_port, flags, env, expected):
    """log_level is a setting like any other: config.toml, then IOMTNODE_LOG_LEVEL, then the
    global --log-level flag (it was read only from the flag: the file's and the variable's
    were shown by config show and ignored by run)."""
    home = tmp_path / "home"
    assert iomtnode("init", "--home", home).returncode == 0
    config = home / "config.toml"
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "warning"'))
    run = iomtnode(*flags, "--log-json", "run", "--home", home, "--p2p",
                   f"127.0.0.1:{taken_port}", "--api", "127.0.0.1:0", env=env)
    assert run.returncode == 1, run.stderr
    levels = _levels(run.stderr)
    if expected == {"info"}:
        assert "info" in levels, run.stderr
    else:
        assert levels <= expected, run.stderr
