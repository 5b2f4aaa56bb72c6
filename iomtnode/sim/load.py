"""The load generator behind ``iomtnode simulate`` and ``iomtnode dev``.

Admits K simulated devices with an authority key, then streams their signed readings
at a fixed total rate in msgpack binary frames, and follows committed blocks to measure
submit-to-commit latency per reading.

Blocks are followed on a connection of their own with a
:class:`~iomtnode.client.BlockFollower`, which resumes the subscription from the block after
the last one seen when the node ends it (a subscriber that fell behind) or the connection
breaks: every block is seen once, so every committed reading gets its latency. Readings can
also be dropped by the node, so when the stream is quiet during the drain, and at the end of
the run, it asks ``get_tx_status`` for every accepted reading it has not seen committed, and
reports each as committed, dropped (with the reason), still pending or unknown to the node.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import structlog
import trio
from trio_websocket import HandshakeError

from ..client import RETRIED, ApiClient, ApiError, BlockFollower, open_client
from ..core.crypto import SigningKey
from ..core.tx import SignedTx
from .vitals import SimDevice, make_devices

log = structlog.get_logger(__name__)

TICK_S = 0.01  # readings due are sent in one frame every tick
MAX_FRAME_READINGS = 2000  # readings in one binary frame (~0.5 MB, well under the 4 MiB cap)
ADMISSION_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 15.0  # after the run, how long to wait for accepted readings to commit
QUIET_S = 1.0  # during the drain, no block for this long: ask for the readings' status
STATUS_BATCH = 10_000  # ids per get_tx_status call (the node's limit)
NOT_FOUND = 1030  # the API's code for a device not (yet) registered
MAX_PRESIGNED = 2_000_000  # readings signed ahead of a run (~0.5 GB in memory at most)
PRESIGN_KEEPALIVE_S = 60.0  # while presigning, a status call this often (s): the node closes
# a connection that sent nothing for its idle timeout (300 s), and presigning a long run on a
# busy machine takes longer


@dataclass
class LoadStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    committed: int = 0
    dropped: int = 0  # accepted, then dropped by the node (it said why)
    pending: int = 0  # accepted and still pending when the run ended
    unknown: int = 0  # accepted, and the node has no record of it: lost
    unchecked: int = 0  # accepted, not seen committed, and the node could not be asked
    resubscribed: int = 0  # times the block subscription was resumed (ended or cut)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    drop_reasons: dict[str, int] = field(default_factory=dict)
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
            "dropped": self.dropped,
            "pending": self.pending,
            "unknown": self.unknown,
            "unchecked": self.unchecked,
            "resubscribed": self.resubscribed,
            "reject_reasons": self.reject_reasons,
            "drop_reasons": self.drop_reasons,
            "latency_ms": {
                "p50": self.percentile(0.50),
                "p99": self.percentile(0.99),
                "max": round(max(self.latencies_ms), 1) if self.latencies_ms else None,
            },
            "elapsed_s": round(time.monotonic() - self.started, 2),
        }


async def admit_devices(client: ApiClient, devices: list[SimDevice], authority: SigningKey,
                        chain_id: str, approvers: Sequence[SigningKey] = ()) -> None:
    """Admit ``devices`` (skipping ones already admitted), approved by ``authority`` and each
    of ``approvers`` (other authorities: a chain whose genesis' admission_threshold is N
    needs N approvals), wait until all are active (``get_device`` answers the authority once
    the client has proven its key), then announce each device's stream's first epoch and wait
    until every announcement is committed."""
    await client.authenticate(authority, chain_id)
    for device in devices:
        for approver in (authority, *approvers):
            try:
                await client.call("submit_tx",
                                  tx=device.admission(approver, chain_id).raw.hex())
            except ApiError as exc:
                if exc.code != 1007:  # already admitted (or approved by this one) is fine
                    raise
    with trio.fail_after(ADMISSION_TIMEOUT_S):
        for device in devices:
            while True:
                try:
                    info = await client.call("get_device", id=device.key.public.hex())
                except ApiError as exc:
                    if exc.code != NOT_FOUND:  # not yet committed is the one expected refusal
                        raise
                    info = None
                if info is not None:
                    device.seq = max(device.seq, info["last_seq"])
                    break
                await trio.sleep(0.1)
    await announce_epochs(client, devices, chain_id)


async def announce_epochs(client: ApiClient, devices: list[SimDevice], chain_id: str) -> None:
    """Announce each device's stream's epoch (already on the ledger is fine) and wait until
    every announcement is committed."""
    ids = []
    for device in devices:
        tx = device.epoch_announcement(chain_id)
        ids.append(tx.id.hex())
        try:
            await client.call("submit_tx", tx=tx.raw.hex())
        except ApiError as exc:
            if exc.code != 1008:  # committed already (a run with the same seed) is fine
                raise
    with trio.fail_after(ADMISSION_TIMEOUT_S):
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            while True:
                found = await client.call("get_tx_status", ids=chunk)
                dropped = [s for s in found if s["state"] == "dropped"]
                if dropped:
                    raise RuntimeError(f"an epoch announcement was dropped: {dropped[0]}")
                if all(s["state"] == "committed" for s in found):
                    break
                await trio.sleep(0.1)


async def _follow_commits(follower: BlockFollower, sent_at: dict[str, float],
                          stats: LoadStats) -> None:
    """Match committed tx ids to submit times; signal ``stats.changed`` after each block.
    The follower sees every block once, across resumed subscriptions."""
    async for block in follower.blocks:
        stats.resubscribed = follower.resubscribed
        now = time.monotonic()
        for tx_id in block["tx_ids"]:
            t0 = sent_at.pop(tx_id, None)
            if t0 is not None:
                stats.committed += 1
                stats.latencies_ms.append((now - t0) * 1000)
        stats.changed.set()
        stats.changed = trio.Event()


async def reconcile(client: ApiClient, sent_at: dict[str, float], stats: LoadStats, *,
                    final: bool = False, inflight: set[str] | frozenset[str] = frozenset(),
                    following_from: float = math.inf) -> None:
    """Ask the node the status of every accepted reading not seen committed (in batches):
    committed and dropped ones are counted and forgotten, unknown ones too (the node lost
    them); pending ones stay, and with ``final`` are counted as still pending. Readings in
    ``inflight`` (sent, not answered yet) are not asked about: unknown is no verdict yet.
    Readings committed at ``following_from`` or above stay too: a follower that has not passed
    that height yet (it is resubscribing, say) will see their block and count them with their
    latency."""
    ids = [tx_id for tx_id in sent_at if tx_id not in inflight]
    for start in range(0, len(ids), STATUS_BATCH):
        for status in await client.call("get_tx_status", ids=ids[start:start + STATUS_BATCH]):
            state = status["state"]
            if state == "pending":
                stats.pending += 1 if final else 0
                continue
            if state == "committed" and status["height"] >= following_from:
                continue  # its block is still to come to the follower
            if sent_at.pop(status["id"], None) is None:
                continue  # its block notification came meanwhile
            if state == "committed":
                stats.committed += 1  # no latency: when it was committed is not known
            elif state == "dropped":
                stats.dropped += 1
                # numbers out, so one rule's drops count under one reason
                reason = f"{status['code']} {re.sub(r'[0-9]+', 'N', status['reason'])[:80]}"
                stats.drop_reasons[reason] = stats.drop_reasons.get(reason, 0) + 1
            else:
                stats.unknown += 1
    if ids:
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


async def presign_connected(client: Any, sims: list[SimDevice], chain_id: str, rate: float,
                            duration_s: float) -> tuple[list[SignedTx], float]:
    """:func:`presign_readings` in a worker thread, ``client``'s connection kept alive by a
    status call every :data:`PRESIGN_KEEPALIVE_S` meanwhile."""
    async with trio.open_nursery() as nursery:
        async def keep_alive() -> None:
            while True:
                await trio.sleep(PRESIGN_KEEPALIVE_S)
                try:
                    await client.call("status")
                except RETRIED as exc:  # one missed does no harm; a lost
                    # connection fails the run's first send, which says so
                    log.warning("presign_keepalive_failed", error=str(exc))

        nursery.start_soon(keep_alive)
        signed = await trio.to_thread.run_sync(presign_readings, sims, chain_id, rate,
                                               duration_s)
        nursery.cancel_scope.cancel()
    return signed


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
    ca: Path | None = None,
    approvers: Sequence[SigningKey] = (),
    stop: trio.Event | None = None,
) -> LoadStats:
    """Admit ``devices`` (approved by ``authority`` and ``approvers``: see
    :func:`admit_devices`) and stream ``rate`` readings/s for ``duration_s`` (inf = forever).

    With ``presign``, every reading is signed (and sealed) before the timed phase, each
    stamped with the time it is scheduled to be sent, so the generator's own CPU does not
    limit or disturb what is measured (a benchmark's load). Needs a finite duration.
    ``ca``: the PEM file to trust for a ``wss://`` URL (see :func:`~iomtnode.client.open_client`).
    ``stop``, once set, ends the streaming as the end of ``duration_s`` does (then the
    readings sent are followed until committed, as after any run).
    """
    sims = make_devices(devices, seed)
    stop = trio.Event() if stop is None else stop
    stats = LoadStats()
    sent_at: dict[str, float] = {}
    async with open_client(url, ca=ca) as client, _open_record(record) as recorded:
        await admit_devices(client, sims, authority, chain_id, approvers)
        log.info("devices_admitted", devices=devices)
        planned: list[SignedTx] = []
        if presign:
            if not math.isfinite(duration_s) or rate * duration_s > MAX_PRESIGNED:
                raise ValueError(f"presign needs rate x duration <= {MAX_PRESIGNED:,}")
            planned, lead_s = await presign_connected(client, sims, chain_id, rate,
                                                      duration_s)
            await trio.sleep(lead_s)
        async with trio.open_nursery() as nursery:
            inflight: set[str] = set()  # sent, the node's answer not in yet
            # readings go in blocks after the head now: follow from the next one
            follower = BlockFollower(url, (await client.call("status"))["height"] + 1, ca=ca)
            await nursery.start(follower.run)
            nursery.start_soon(_follow_commits, follower, sent_at, stats)
            start = trio.current_time()
            stats.started = time.monotonic()
            next_device = 0
            tick = 0
            while trio.current_time() - start < duration_s and not stop.is_set():
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
                    inflight.add(tx.id.hex())
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
                inflight.clear()
                if recorded is not None:
                    recorded.write("".join(f"{tx.id.hex()}\n" for tx, (code, _) in
                                           zip(batch, results, strict=True) if code == 0))
                    recorded.flush()
                if on_progress is not None:
                    on_progress(stats)
            with trio.move_on_after(DRAIN_TIMEOUT_S):
                while sent_at:
                    with trio.move_on_after(QUIET_S) as quiet:
                        await stats.changed.wait()
                    if quiet.cancelled_caught:  # no block heard: the stream may be cut
                        await reconcile(client, sent_at, stats, inflight=inflight,
                                        following_from=follower.next_height)
            nursery.cancel_scope.cancel()
        stats.resubscribed = follower.resubscribed
    try:
        async with open_client(url, ca=ca) as client:  # a fresh one: the first may be closed
            await reconcile(client, sent_at, stats, final=True)
    except (OSError, ConnectionError, HandshakeError, trio.TooSlowError, ApiError) as exc:
        stats.unchecked = len(sent_at)  # the node is gone: say how many were not asked
        log.warning("tx_status_not_checked", readings=stats.unchecked, reason=repr(exc))
    return stats
