"""``iomtnode blocks follow``: piped into a reader that stops (``| head -1``) it ends quietly
with exit 0, as a filter does; a node down when it starts, or gone later, is retried alike
(a warning line per attempt), up to ``--retry-for``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import trio

from iomtnode.cli.blocks import GAVE_UP_EXIT
from iomtnode.config import Config
from iomtnode.home import init_home

FOLLOW_TIMEOUT_S = 30


async def test_follow_into_a_pipe_whose_reader_left_ends_quietly(running_node):
    read_end, write_end = os.pipe()
    with trio.fail_after(FOLLOW_TIMEOUT_S):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "iomtnode", "blocks", "follow", "--since", "0",
             "--api", running_node.url], stdout=write_end, stderr=subprocess.PIPE)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            first = await trio.to_thread.run_sync(reader.readline)
        assert b'"height": 0' in first
        stderr = b""
        while chunk := await proc.stderr.receive_some(65536):  # until it exits
            stderr += chunk
        code = await proc.wait()
    assert code == 0, stderr
    assert b"error" not in stderr and b"Traceback" not in stderr, stderr


# ---- a node that is down: at the start and later, the same retries and the same bound -----

NODE_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_home(tmp_path: Path) -> tuple[Path, str]:
    """A one-authority home whose API will listen on a port free now; its URL."""
    api = f"127.0.0.1:{free_port()}"
    home = init_home(tmp_path / "node", chain_id="iomt-test",
                     config=Config(api_listen=api, p2p_listen="127.0.0.1:0"))
    return home.path, f"ws://{api}/api/v1"


async def start(*args: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "iomtnode", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=NODE_ENV)


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    """What ``stream`` gives until ``marker`` is in it (or it ends)."""
    seen = b""
    while marker not in seen and (chunk := await stream.receive_some(65536)):
        seen += chunk
    return seen


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    return await read_until(stream, b"\0never\0")


async def test_follow_started_before_the_node_waits_for_it(tmp_path: Path):
    home, url = node_home(tmp_path)
    with trio.fail_after(FOLLOW_TIMEOUT_S):
        follower = await start("--log-json", "blocks", "follow", "--since", "0", "--count",
                               "3", "--retry-for", "60", "--api", url)
        try:
            stderr = await read_until(follower.stderr, b"block_subscription_failed")
            assert b"block_subscription_failed" in stderr, stderr  # told, not ended
            assert follower.poll() is None
            node = await start("--log-json", "run", "--home", str(home))
            try:
                out = await read_all(follower.stdout)
                stderr += await read_all(follower.stderr)
                code = await follower.wait()
            finally:
                node.terminate()
                await node.wait()
        finally:
            follower.kill()
    assert code == 0, stderr
    assert [json.loads(line)["height"] for line in out.splitlines()] == [0, 1, 2]
    failed = [json.loads(line) for line in stderr.splitlines()
              if b"block_subscription_failed" in line]
    assert failed and all(e["level"] == "warning" and e["since_height"] == 0 and
                          e["url"] == url and e["reason"] for e in failed)


async def test_follow_gives_up_on_a_node_gone_later_after_retry_for(tmp_path: Path):
    home, url = node_home(tmp_path)
    with trio.fail_after(FOLLOW_TIMEOUT_S):
        node = await start("--log-json", "run", "--home", str(home))
        try:
            follower = await start("--log-json", "blocks", "follow", "--since", "0",
                                   "--retry-for", "2", "--api", url)
            try:
                out = await read_until(follower.stdout, b'"height": 1')
                node.kill()  # gone without a word
                await node.wait()
                out += await read_all(follower.stdout)
                stderr = await read_all(follower.stderr)
                code = await follower.wait()
            finally:
                follower.kill()
        finally:
            node.kill()
    heights = [json.loads(line)["height"] for line in out.splitlines()]
    assert heights == list(range(len(heights))) and len(heights) >= 2
    assert code == GAVE_UP_EXIT, stderr
    assert b"block_subscription_failed" in stderr
    assert f"resume with --since {heights[-1] + 1}".encode() in stderr
