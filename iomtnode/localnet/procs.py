"""Node and simulator processes: commands, spawning, and processes known only by pid.

A localnet's processes may outlive the Python process that started them (``up --detach``,
``chaos`` restarting a node), so every process is also tracked as a :class:`ProcRef`: pid
plus start time from ``/proc``, so a pid the OS has reused is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import trio

from .errors import LocalnetTimeout
from .layout import NodeEntry, ProcRef

PidState = Literal["running", "stopped", "gone"]
STOP_GRACE_S = 10.0  # after SIGTERM, before SIGKILL
KILL_WAIT_S = 5.0  # after SIGKILL, for the kernel to reap or zombify the process
POLL_S = 0.05
SIM_DURATION_S = 1e9  # "until stopped" for `iomtnode simulate`
LOG_TAIL_CHARS = 3000
RECORD_NAME = "accepted.hex"  # in the localnet directory: every reading id node1 accepted


def log_tail(path: Path) -> str:
    """The end of a process's log, for an error message."""
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def proc_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), or None if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def pid_state(ref: ProcRef | None) -> PidState:
    """``running``, ``stopped`` (SIGSTOP) or ``gone`` (exited, zombie, or pid reused)."""
    if ref is None:
        return "gone"
    try:
        stat = Path(f"/proc/{ref.pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    except OSError:  # no /proc (not Linux): fall back to a signal-0 probe
        try:
            os.kill(ref.pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return "running"
        return "running"
    tail = stat.rsplit(")", 1)[1].split()
    if ref.start is not None and int(tail[19]) != ref.start:
        return "gone"  # the pid now names another process
    state = tail[0]
    if state in ("Z", "X"):
        return "gone"
    return "stopped" if state in ("T", "t") else "running"


def ref_of(pid: int) -> ProcRef:
    return ProcRef(pid, proc_start(pid))


def signal_ref(ref: ProcRef, signum: int) -> bool:
    """Send ``signum`` if ``ref`` still names a live process of ours; say whether it was sent."""
    if pid_state(ref) == "gone":
        return False
    try:
        os.kill(ref.pid, signum)
    except ProcessLookupError:
        return False
    return True


def node_command(entry: NodeEntry, *, api_listen: str | None = None) -> list[str]:
    """`iomtnode run` for ``entry`` at its current addresses (the API at ``api_listen``
    instead, if given), logging JSON lines."""
    return [sys.executable, "-m", "iomtnode", "--log-json", "run", "--home", str(entry.home),
            "--api", api_listen or entry.api_listen, "--p2p", entry.p2p_listen]


def simulator_command(entry: NodeEntry, devices: int, rate: float, *,
                      record: Path | None = None) -> list[str]:
    """`iomtnode simulate` against ``entry`` (an authority), streaming until stopped and
    appending each accepted reading's id to ``record`` (default: RECORD_NAME in the
    localnet directory, which holds ``entry``'s home), so a restarted simulator adds to it."""
    record = entry.home.parent / RECORD_NAME if record is None else record
    trust = ["--api-ca", str(entry.api_ca)] if entry.api_ca is not None else []
    return [sys.executable, "-m", "iomtnode", "--log-json", "simulate", "--api", entry.api,
            *trust, "--home", str(entry.home), "--devices", str(devices), "--rate", str(rate),
            "--duration", str(SIM_DURATION_S), "--record", str(record)]


def child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}


async def spawn(command: list[str], log: Path, env: Mapping[str, str]) -> trio.Process:
    """Start ``command`` in its own session (a terminal's Ctrl-C reaches only the
    supervisor, which stops the children in order), stdout and stderr appended to ``log``."""
    with log.open("ab") as out:
        return await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL,
            stdout=out, stderr=out, env=dict(env), start_new_session=True)


async def stop_process(proc: trio.Process, *, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM (after SIGCONT, in case it is paused), then SIGKILL after ``grace_s``.

    Runs shielded, so it completes even when the caller is cancelled. Returns the exit code.
    """
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(grace_s):
                return await proc.wait()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return await proc.wait()


async def wait_gone(ref: ProcRef, timeout_s: float) -> bool:
    """Wait until ``ref`` is gone; say whether it went within ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while pid_state(ref) != "gone":  # noqa: ASYNC110  (a pid has no event to wait on)
            await trio.sleep(POLL_S)
        return True
    return False


async def kill_all(victims: Mapping[str, tuple[ProcRef, trio.Process | None]]) -> None:
    """SIGKILL every process of ``victims`` ({name: (ref, our child or None)}) before
    waiting for any, then wait until each is gone, reaping our children; LocalnetTimeout
    naming one that outlived SIGKILL for KILL_WAIT_S."""
    signalled = {name for name, (ref, _) in victims.items() if signal_ref(ref, signal.SIGKILL)}
    for name, (ref, child) in victims.items():
        if child is not None:
            with trio.move_on_after(KILL_WAIT_S):
                await child.wait()  # reaps it, so the check below is immediate
        if name in signalled and not await wait_gone(ref, KILL_WAIT_S):
            raise LocalnetTimeout(f"{name} (pid {ref.pid}) outlived SIGKILL for {KILL_WAIT_S} s")


async def stop_ref(ref: ProcRef, *, grace_s: float = STOP_GRACE_S) -> str:
    """Stop a process known only by pid: SIGCONT + SIGTERM, wait, SIGKILL.

    Returns ``"terminated"``, ``"killed"`` or ``"not running"``. Shielded from cancellation.
    """
    with trio.CancelScope(shield=True):
        if not signal_ref(ref, signal.SIGCONT) or not signal_ref(ref, signal.SIGTERM):
            return "not running"
        if await wait_gone(ref, grace_s):
            return "terminated"
        signal_ref(ref, signal.SIGKILL)
        if not await wait_gone(ref, KILL_WAIT_S):
            raise OSError(f"pid {ref.pid} survived SIGKILL for {KILL_WAIT_S} s")
        return "killed"


def stop_refs_sync(refs: list[ProcRef], *, grace_s: float = STOP_GRACE_S) -> dict[int, str]:
    """Stop several processes at once, without trio: {pid: terminated/killed/not running}."""
    result: dict[int, str] = {}
    live = []
    for ref in refs:
        if signal_ref(ref, signal.SIGCONT) and signal_ref(ref, signal.SIGTERM):
            live.append(ref)
        else:
            result[ref.pid] = "not running"
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_state(r) != "gone" for r in live):
        time.sleep(POLL_S)
    for ref in live:
        if pid_state(ref) == "gone":
            result[ref.pid] = "terminated"
        else:
            signal_ref(ref, signal.SIGKILL)
            result[ref.pid] = "killed"
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline and any(pid_state(r) != "gone" for r in live):
        time.sleep(POLL_S)
    return result
