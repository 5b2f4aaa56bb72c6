"""The load generator behind ``iomtnode simulate`` and ``iomtnode dev``.

Admits K simulated devices with an authority key, then streams their signed readings
at a fixed total rate in msgpack binary frames, and follows committed blocks to measure
submit-to-commit latency per reading.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import structlog
import trio

from ..client import ApiClient, ApiError, open_client
from ..core.crypto import SigningKey
from ..core.tx import SignedTx
from .vitals import SimDevice, make_devices

log = structlog.get_logger(__name__)

TICK_S = 0.01  # readings due are sent in one frame every tick
MAX_FRAME_READINGS = 2000  # readings in one binary frame (~0.5 MB, well under the 4 MiB cap)
ADMISSION_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 15.0  # after the run, how long to wait for accepted readings to commit
MAX_PRESIGNED = 2_000_000  # readings signed ahead of a run (~0.5 GB in memory at most)


@dataclass
class LoadStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    committed: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    changed: trio.Event = field(default_factory=trio.Event)  # set after each committed block

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

    def summary(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "committed": self.committed,
            "reject_reasons": self.reject_reasons,
            "latency_ms": {
                "p50": self.percentile(0.50),
                "p99": self.percentile(0.99),
                "max": round(max(self.latencies_ms), 1) if self.latencies_ms else None,
            },
            "elapsed_s": round(time.monotonic() - self.started, 2),
        }


async def admit_devices(client: ApiClient, devices: list[SimDevice], authority: SigningKey,
                        chain_id: str) -> None:
    """Admit ``devices`` (skipping ones already admitted) and wait until all are active."""
    for device in devices:
        try:
            await client.call("submit_tx", tx=device.admission(authority, chain_id).raw.hex())
        except ApiError as exc:
            if exc.code != 1007:  # already admitted is fine
                raise
    with trio.fail_after(ADMISSION_TIMEOUT_S):
        for device in devices:
            while True:
                try:
                    info = await client.call("get_device", id=device.key.public.hex())
                except ApiError:
                    info = None
                if info is not None:
                    device.seq = max(device.seq, info["last_seq"])
                    break
                await trio.sleep(0.1)


async def _follow_commits(client: ApiClient, sent_at: dict[str, float], stats: LoadStats,
                          ) -> None:
    """Match committed tx ids to submit times; signal ``stats.changed`` after each block."""
    async for note in client.notifications:
        if note.get("method") != "block":
            continue
        now = time.monotonic()
        for tx_id in note["params"]["tx_ids"]:
            t0 = sent_at.pop(tx_id, None)
            if t0 is not None:
                stats.committed += 1
                stats.latencies_ms.append((now - t0) * 1000)
        stats.changed.set()
        stats.changed = trio.Event()


@contextlib.asynccontextmanager
async def _open_record(path: Path | None) -> AsyncIterator[TextIO | None]:
    if path is None:
        yield None
        return
    with path.open("a") as out:
        yield out


def presign_readings(sims: list[SimDevice], chain_id: str, rate: float, duration_s: float
                     ) -> tuple[list[SignedTx], float]:
    """Sign ``rate * duration_s`` readings round-robin over ``sims``, stamped with their
    send times; returns them and how long to wait before sending the first."""
    count = int(rate * duration_s)
    probe = max(1, min(count, 200))
    t0 = time.monotonic()
    for i in range(probe):  # timing probe; never sent (sequence numbers only need to grow)
        sims[i % len(sims)].next_reading(chain_id, 0)
    per_reading_s = (time.monotonic() - t0) / probe
    lead_s = per_reading_s * count * 1.3 + 0.5
    begin_ms = int((time.time() + lead_s) * 1000)
    readings = [sims[i % len(sims)].next_reading(chain_id, begin_ms + int(i * 1000 / rate))
                for i in range(count)]
    wait_s = max(0.0, begin_ms / 1000 - time.time())
    log.info("readings_presigned", count=count, per_reading_us=round(per_reading_s * 1e6),
             starts_in_s=round(wait_s, 2))
    return readings, wait_s


async def run_load(
    url: str,
    authority: SigningKey,
    chain_id: str,
    *,
    devices: int,
    rate: float,
    duration_s: float,
    seed: int | None = None,
    presign: bool = False,
    on_progress: Callable[[LoadStats], None] | None = None,
    record: Path | None = None,
) -> LoadStats:
    """Admit ``devices`` and stream ``rate`` readings/s for ``duration_s`` (inf = forever).

    With ``presign``, every reading is signed (and sealed) before the timed phase, each
    stamped with the time it is scheduled to be sent, so the generator's own CPU does not
    limit or disturb what is measured (a benchmark's load). Needs a finite duration.
    """
    sims = make_devices(devices, seed)
    stats = LoadStats()
    sent_at: dict[str, float] = {}
    async with open_client(url) as client, _open_record(record) as recorded:
        await client.call("subscribe_blocks")
        await admit_devices(client, sims, authority, chain_id)
        log.info("devices_admitted", devices=devices)
        planned: list[SignedTx] = []
        if presign:
            if not math.isfinite(duration_s) or rate * duration_s > MAX_PRESIGNED:
                raise ValueError(f"presign needs rate x duration <= {MAX_PRESIGNED:,}")
            planned, lead_s = await trio.to_thread.run_sync(
                presign_readings, sims, chain_id, rate, duration_s)
            await trio.sleep(lead_s)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_follow_commits, client, sent_at, stats)
            start = trio.current_time()
            stats.started = time.monotonic()
            next_device = 0
            tick = 0
            while trio.current_time() - start < duration_s:
                tick += 1
                await trio.sleep_until(start + tick * TICK_S)
                due = int(rate * (trio.current_time() - start)) - stats.submitted
                due = min(due, MAX_FRAME_READINGS)  # behind schedule: catch up frame by frame
                if due <= 0:
                    continue
                if presign:
                    batch = planned[stats.submitted:stats.submitted + due]
                    if not batch:
                        break
                else:
                    now_ms = int(time.time() * 1000)
                    batch = []
                    for _ in range(due):
                        batch.append(sims[next_device].next_reading(chain_id, now_ms))
                        next_device = (next_device + 1) % len(sims)
                t0 = time.monotonic()
                for tx in batch:
                    sent_at[tx.id.hex()] = t0
                results = await client.submit_binary([tx.raw for tx in batch])
                stats.submitted += len(batch)
                for tx, (code, detail) in zip(batch, results, strict=True):
                    if code == 0:
                        stats.accepted += 1
                    else:
                        stats.rejected += 1
                        sent_at.pop(tx.id.hex(), None)
                        reason = detail.split(":")[0][:60]
                        stats.reject_reasons[reason] = stats.reject_reasons.get(reason, 0) + 1
                if recorded is not None:
                    recorded.write("".join(f"{tx.id.hex()}\n" for tx, (code, _) in
                                           zip(batch, results, strict=True) if code == 0))
                    recorded.flush()
                if on_progress is not None:
                    on_progress(stats)
            with trio.move_on_after(DRAIN_TIMEOUT_S):
                while sent_at:
                    await stats.changed.wait()
            nursery.cancel_scope.cancel()
    return stats
