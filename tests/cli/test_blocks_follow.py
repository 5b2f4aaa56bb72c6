"""``iomtnode blocks follow`` piped into a reader that stops (``| head -1``) ends quietly
with exit 0, as a filter does: not with an error about reaching the node."""

from __future__ import annotations

import os
import subprocess
import sys

import trio

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
