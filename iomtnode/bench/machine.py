"""What this machine can do, measured in the same run as the benchmark (the ceiling), and
what node processes cost (CPU, memory) read from /proc."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

VERIFY_SAMPLE_S = 1.5  # how long the verify rate is measured...
VERIFY_SLICES = 6  # ...in this many slices, the best of which counts
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ed25519_verify_rate(seconds: float = VERIFY_SAMPLE_S, slices: int = VERIFY_SLICES
                        ) -> float:
    """ed25519 verifications per second on one core (PyNaCl, 200-byte messages): the best of
    ``slices`` equal slices of ``seconds``, so that other processes taking the core for a
    moment do not lower the ceiling (it is what the machine can do, not what it did)."""
    key = nacl.signing.SigningKey.generate()
    verify_key = key.verify_key
    signed = [key.sign(os.urandom(200)) for _ in range(64)]
    best = 0.0
    for _ in range(max(1, slices)):
        done = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / max(1, slices):
            for message in signed:
                verify_key.verify(message)
            done += len(signed)
        best = max(best, done / elapsed)
    return best


@dataclass(frozen=True, slots=True)
class ProcUsage:
    cpu_s: float  # user + system seconds so far
    rss_peak_mb: float  # VmHWM
    reaped_cpu_s: float = 0.0  # ... of its child processes that exited and were waited for


def proc_usage(pid: int) -> ProcUsage | None:
    """CPU seconds and peak RSS of a live process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    reaped_cpu_s = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS  # cutime, cstime
    hwm_kb = next((int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmHWM:")), 0)
    return ProcUsage(cpu_s, hwm_kb / 1024, reaped_cpu_s)


def tree_cpu_s(pid: int, usage: ProcUsage) -> float:
    """CPU seconds of process ``pid`` (``usage`` read of it) and of its child processes (a
    node's verifying workers): the live ones' and those that exited and were waited for."""
    live = (child.cpu_s for child in map(proc_usage, children(pid)) if child)
    return usage.cpu_s + usage.reaped_cpu_s + sum(live)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a node's verification workers)."""
    pids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        return pids
    return pids


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
