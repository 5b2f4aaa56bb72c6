"""Real `iomtnode` processes for black-box tests, each bounded by a deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

COMMAND_TIMEOUT_S = 90.0
START_TIMEOUT_S = 20.0
POLL_S = 0.05  # how often a log file is re-read while waiting for a condition


def iomtnode(*args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
             ) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; with ``check``, a failure shows its stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "iomtnode", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"iomtnode {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def iomtnode_all(*commands: Sequence[str], check: bool = True,
                 timeout: float = COMMAND_TIMEOUT_S) -> list[subprocess.CompletedProcess[str]]:
    """Run independent CLI commands at once, each as :func:`iomtnode` runs one (most of a
    command's time is its interpreter starting); their results in the order given."""
    with ThreadPoolExecutor(max_workers=len(commands) or 1) as pool:
        running = [pool.submit(iomtnode, *args, check=check, timeout=timeout)
                   for args in commands]
        return [future.result() for future in running]


def log_events(path: Path) -> list[dict]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    api: str

    @classmethod
    @contextmanager
    def start(cls, home: Path, log: Path, *extra: str) -> Iterator[NodeProcess]:
        """Start `iomtnode run` on free API and p2p ports (a fixed port would collide with any
        other run on the machine); stop it (SIGKILL if stuck) on exit."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "iomtnode", "--log-json", "--log-level", "debug", "run",
                 "--home", str(home), "--api", "127.0.0.1:0", "--p2p", "127.0.0.1:0", *extra],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.5",
                     "IOMTNODE_AUDIT_ANCHOR_S": "1"})  # audit logs anchored within a second
        try:
            api = cls._wait_api(proc, log)
            yield cls(proc, log, api)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    @staticmethod
    def _wait_api(proc: subprocess.Popen[bytes], log: Path) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for event in log_events(log):
                if event.get("event") == "node_started":
                    return event["api"]
            if proc.poll() is not None:
                raise AssertionError(f"node exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            time.sleep(POLL_S)
        raise AssertionError(f"node did not start in {START_TIMEOUT_S} s")

    def last_height(self) -> int:
        heights = [e["height"] for e in log_events(self.log)
                   if e.get("event") == "block_committed"]
        return max(heights, default=0)

    def wait_for_height(self, height: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.last_height() < height:
            if time.monotonic() > deadline:
                raise AssertionError(f"height {height} not reached in {timeout_s} s")
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}")
            time.sleep(POLL_S)
