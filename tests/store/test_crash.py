"""Crash safety: SIGKILL a writer at random moments; the store always holds its last whole block.

A writer process (crash_writer.py) appends synthetic blocks as fast as it can and reports each
height once ``commit_block`` returned. The test kills it at a seeded-random moment, reopens the
store, checks that everything up to the head is whole and nothing beyond it is visible, and
starts the writer again on the same store.
"""

from __future__ import annotations

import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from iomtnode.store import BlockStore
from tests.store.crash_writer import (
    COUNTER_KEY,
    LIVE_KEY_PREFIX,
    LIVE_KEYS_KEPT,
    height_bytes,
    live_key,
    synthetic_block,
)

WRITER = pathlib.Path(__file__).with_name("crash_writer.py")
SEED = 20240611  # change to explore other kill moments; failures print it
KILL_CYCLES = 24
MIN_REPORTED_BLOCKS = 3  # per cycle, before the kill may come
MAX_REPORTED_BLOCKS = 25
MAX_EXTRA_DELAY_S = 0.01  # after enough reports, wait up to this long, so kills land mid-write
REPORT_TIMEOUT_S = 20.0  # a writer must report its blocks within this (python start included)
EXIT_TIMEOUT_S = 10.0  # a SIGKILLed writer must be gone within this


def read_reports(proc: subprocess.Popen, buffer: bytearray, want: int, timeout_s: float) -> None:
    """Read the writer's stdout into ``buffer`` until it holds ``want`` lines (or EOF if want<0)."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    while want < 0 or buffer.count(b"\n") < want:
        remaining = deadline - time.monotonic()
        lines = buffer.count(b"\n")
        if remaining <= 0:
            raise TimeoutError(f"writer reported {lines} blocks in {timeout_s} s, wanted {want}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                if want < 0:
                    return
                raise EOFError(f"writer exited after reporting {lines} blocks")
            buffer += chunk


def check_store(path: pathlib.Path, cycle: str) -> int:
    """Check the store is whole up to its head and empty beyond it; return the head height."""
    with BlockStore.open(path) as store:
        head = store.head()
        assert head is not None, cycle
        top, top_hash = head
        for height in range(top + 1):
            block = synthetic_block(height)
            assert store.block_bytes(height) == block.block_bytes, (cycle, height)
            assert store.commit_bytes(height) == block.commit_bytes, (cycle, height)
            assert store.block_height(block.block_hash) == height, (cycle, height)
            for position, tx_id in enumerate(block.tx_ids):
                assert store.tx_location(tx_id) == (height, position), (cycle, height, position)
        assert top_hash == synthetic_block(top).block_hash, cycle

        beyond = synthetic_block(top + 1)
        assert store.block_bytes(top + 1) is None, cycle
        assert store.commit_bytes(top + 1) is None, cycle
        assert store.block_height(beyond.block_hash) is None, cycle
        for tx_id in beyond.tx_ids:
            assert store.tx_location(tx_id) is None, cycle

        assert store.get_state(COUNTER_KEY) == height_bytes(top), cycle
        live = {key: value for key, value in store.iter_state(LIVE_KEY_PREFIX)}
        expected = range(max(0, top - LIVE_KEYS_KEPT + 1), top + 1)
        assert sorted(live) == [live_key(h) for h in expected], cycle
        for height in expected:
            assert live[live_key(height)] == synthetic_block(height).state_changes[live_key(height)]
        return top


@pytest.mark.timeout(120)
def test_sigkill_at_any_moment_leaves_the_last_whole_block(tmp_path):
    rng = random.Random(SEED)
    path = tmp_path / "data"
    top = -1
    for cycle_number in range(KILL_CYCLES):
        cycle = f"seed {SEED}, cycle {cycle_number}"
        reports = bytearray()
        with (tmp_path / f"writer-{cycle_number}.err").open("w+b") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(path)], stdout=subprocess.PIPE, stderr=stderr
            )
            try:
                want = rng.randint(MIN_REPORTED_BLOCKS, MAX_REPORTED_BLOCKS)
                try:
                    read_reports(proc, reports, want, REPORT_TIMEOUT_S)
                except (TimeoutError, EOFError) as exc:
                    stderr.seek(0)
                    pytest.fail(f"{cycle}: {exc}; writer stderr:\n{stderr.read().decode()}")
                time.sleep(rng.uniform(0, MAX_EXTRA_DELAY_S))
                proc.send_signal(signal.SIGKILL)
                read_reports(proc, reports, -1, EXIT_TIMEOUT_S)  # what it printed before dying
                assert proc.wait(timeout=EXIT_TIMEOUT_S) == -signal.SIGKILL, cycle
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=EXIT_TIMEOUT_S)
                proc.stdout.close()

        printed = [int(line) for line in reports.splitlines()]
        assert printed == list(range(top + 1, top + 1 + len(printed))), cycle  # resumed at head
        top = check_store(path, cycle)
        assert top >= printed[-1], f"{cycle}: a reported block was lost"
    assert top >= KILL_CYCLES * MIN_REPORTED_BLOCKS


BATCH = 7  # blocks per synced batch in the batched-writer test
BATCH_KILL_CYCLES = 10


@pytest.mark.timeout(120)
def test_sigkill_during_batched_commits_leaves_a_whole_batch(tmp_path):
    """A syncing node writes ranges of blocks in one batch: a kill leaves the store at the end
    of a batch (the one being written, or the one before), never inside one."""
    rng = random.Random(SEED + 1)
    path = tmp_path / "data"
    top = -1
    for cycle_number in range(BATCH_KILL_CYCLES):
        cycle = f"seed {SEED + 1}, batched cycle {cycle_number}"
        reports = bytearray()
        with (tmp_path / f"writer-{cycle_number}.err").open("w+b") as stderr:
            proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(BATCH)],
                                    stdout=subprocess.PIPE, stderr=stderr)
            try:
                read_reports(proc, reports, rng.randint(1, 4), REPORT_TIMEOUT_S)
                time.sleep(rng.uniform(0, MAX_EXTRA_DELAY_S))
                proc.send_signal(signal.SIGKILL)
                read_reports(proc, reports, -1, EXIT_TIMEOUT_S)
                assert proc.wait(timeout=EXIT_TIMEOUT_S) == -signal.SIGKILL, cycle
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=EXIT_TIMEOUT_S)
                proc.stdout.close()
        printed = [int(line) for line in reports.splitlines()]
        assert printed == [top + BATCH * i for i in range(1, len(printed) + 1)], cycle
        top = check_store(path, cycle)
        assert top in (printed[-1], printed[-1] + BATCH), f"{cycle}: head {top} inside a batch"
