"""Each signature is verified once per node, and the record of what passed never lets an
unverified transaction through (a forged copy has the same id but is its own entry)."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from iomtnode.admission.mempool import Mempool
from iomtnode.admission.verify import THREAD_MIN_BATCH, Verifier
from iomtnode.chain.chain import InvalidBlockError
from iomtnode.core import errors as e

from ..core.helpers import CHAIN_ID
from .chainkit import GENESIS, admission_of, forged, reading, seal_unchecked, source_chain


@pytest.fixture
def chain(tmp_path):
    chain, _ = source_chain(tmp_path / "data", 0, 0)
    yield chain
    chain.store.close()


def pool(chain) -> Mempool:
    return Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)


async def test_each_signature_is_checked_once_and_forged_copies_never_pass():
    verifier = Verifier(CHAIN_ID)
    real = [reading("d1", seq) for seq in range(1, 41)]  # enough for worker threads
    assert len(real) >= THREAD_MIN_BATCH
    assert await verifier.verify(real) == [None] * 40
    assert verifier.verified_count == 40 and all(tx in verifier for tx in real)
    assert await verifier.verify(real + real[:5]) == [None] * 45
    assert verifier.verified_count == 40  # nothing checked twice
    fake = forged(real[0])
    assert fake.id == real[0].id and fake not in verifier
    errors = await verifier.verify([fake, real[1], fake])
    assert errors[1] is None and errors[0] is not None and errors[2] is not None
    assert verifier.verified_count == 41 and fake not in verifier  # copies checked once
    with pytest.raises(Exception, match="signature"):
        verifier.verify_now(fake)


async def test_a_signature_being_checked_by_another_task_is_waited_for_not_checked_again(
        monkeypatch):
    """A lagging node gets one transaction by gossip and in a proposal at the same time:
    the second caller waits for the first one's result (also a forged copy's error)."""
    from iomtnode.admission import verify

    monkeypatch.setattr(verify, "INFLIGHT_WAIT_S", 60.0)  # a loaded test machine is slow
    verifier = Verifier(CHAIN_ID, processes=0)
    # the worker threads hold the first batch until the second caller waits for it, so
    # the first cannot finish before the second asks, however fast or loaded the machine
    release = threading.Event()
    check_now = verifier._check

    def held_check(chunk):
        release.wait(30)
        return check_now(chunk)

    monkeypatch.setattr(verifier, "_check", held_check)
    txs = [reading("d3", seq) for seq in range(1, 65)]
    fake = forged(txs[0])
    got: dict[str, list] = {}

    async def check(name, batch):
        got[name] = await verifier.verify(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check, "gossip", [*txs, fake])
        await trio.testing.wait_all_tasks_blocked()  # the first batch is in worker threads
        nursery.start_soon(check, "proposal", [*txs[32:], fake])
        await trio.testing.wait_all_tasks_blocked()  # ... and the second waits for it
        release.set()
    assert verifier.verified_count == 65  # 64 readings and the forged copy, each once
    assert got["gossip"][:64] == [None] * 64 and got["proposal"][:32] == [None] * 32
    assert got["gossip"][64] is not None and got["proposal"][32] is got["gossip"][64]


async def test_a_slow_check_elsewhere_is_waited_for_only_so_long(autojump_clock):
    """Consensus must not wait behind a syncing node's queued pieces: after
    INFLIGHT_WAIT_S the waiting task checks what it needs itself."""
    from iomtnode.admission.verify import INFLIGHT_WAIT_S

    verifier = Verifier(CHAIN_ID, threads=1, processes=0)
    txs = [reading("d5", seq) for seq in range(1, 33)]
    busy = trio.CapacityLimiter(1)
    await verifier._threads.acquire_on_behalf_of(busy)  # the big check waits for a thread
    async with trio.open_nursery() as nursery:
        nursery.start_soon(verifier.verify, txs)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        assert await verifier.verify(txs[:4]) == [None] * 4  # few: checked inline
        assert trio.current_time() - started == pytest.approx(INFLIGHT_WAIT_S)
        assert all(tx in verifier for tx in txs[:4])
        verifier._threads.release_on_behalf_of(busy)
    assert all(tx in verifier for tx in txs)


async def test_many_signatures_checked_in_threads_elsewhere_are_waited_for_to_the_end(
        autojump_clock):
    """Past INFLIGHT_WAIT_S, a check of this many would go to the same worker threads,
    behind the batch that has them: so that batch is waited for, and nothing is checked
    twice (a node that fell behind otherwise checked thousands twice)."""
    from iomtnode.admission.verify import INFLIGHT_WAIT_S

    verifier = Verifier(CHAIN_ID, threads=1, processes=0)
    txs = [reading("d6", seq) for seq in range(1, 41)]
    busy = trio.CapacityLimiter(1)
    await verifier._threads.acquire_on_behalf_of(busy)  # the big check waits for a thread
    async def release_later():
        await trio.sleep(10 * INFLIGHT_WAIT_S)
        verifier._threads.release_on_behalf_of(busy)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(verifier.verify, txs)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(release_later)
        started = trio.current_time()
        assert await verifier.verify(txs[8:8 + THREAD_MIN_BATCH + 4]) == [None] * 20
        assert trio.current_time() - started >= 10 * INFLIGHT_WAIT_S
    assert verifier.verified_count == 40


async def test_a_cancelled_check_leaves_its_signatures_to_the_waiting_task():


    verifier = Verifier(CHAIN_ID, threads=1, processes=0)
    txs = [reading("d4", seq) for seq in range(1, 33)]
    got = []
    busy = trio.CapacityLimiter(1)
    await verifier._threads.acquire_on_behalf_of(busy)  # the first check waits for a thread
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def cancelled():
            with first:
                await verifier.verify(txs)

        async def waiting():
            got.extend(await verifier.verify(txs))

        nursery.start_soon(cancelled)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiting)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()  # before it checked anything: the waiting task checks them itself
        await trio.testing.wait_all_tasks_blocked()
        verifier._threads.release_on_behalf_of(busy)
    assert verifier.verified_count == 32  # the cancelled call checked none
    assert got == [None] * 32 and all(tx in verifier for tx in txs)


async def test_the_capacity_bounds_memory_and_forgetting_only_costs_a_recheck():
    verifier = Verifier(CHAIN_ID, capacity=3)
    txs = [reading("d2", seq) for seq in range(1, 6)]
    await verifier.verify(txs)
    assert [tx in verifier for tx in txs] == [False, False, True, True, True]
    await verifier.verify(txs[:1])
    assert verifier.verified_count == 6


async def test_a_block_with_a_forged_copy_of_a_pending_transaction_is_refused(chain):
    mempool = pool(chain)
    real = reading("d1", 1)
    mempool.add_tx(real)  # verified on admission
    fake = forged(real)
    assert mempool.verified(real) and not mempool.verified(fake)
    block, commit = seal_unchecked(chain, (fake,))
    with pytest.raises(InvalidBlockError, match="signature"):
        chain.check(block, commit, mempool.verified)


async def test_batches_are_admitted_in_order_with_the_reason_for_each_refusal(chain, nursery):
    mempool = pool(chain)
    admission = admission_of(mempool)
    await nursery.start(admission.run)
    good = [reading("d1", seq) for seq in range(1, 301)]  # several chunks
    raws = [tx.raw for tx in good]
    raws[10] = forged(good[10]).raw
    raws[20] = b"\x92junk"
    raws.append(good[5].raw)  # a copy of one admitted earlier in the batch
    results = await admission.submit_many(raws, reading_only=True)
    assert len(results) == 301
    assert isinstance(results[10], e.BadSignatureRuleError)
    assert isinstance(results[20], e.MalformedTxRuleError)
    assert isinstance(results[-1], e.DuplicateTxError)
    admitted = [r for r in results if not isinstance(r, e.RuleError)]
    assert len(admitted) == 298 and len(mempool) == 298
    assert mempool.verifier.verified_count == 299  # 298 good + 1 forged, each once
    # the same again: refused as pending, without another signature check
    again = await admission.submit_many([tx.raw for tx in good[:10]])
    assert all(isinstance(r, e.DuplicateTxError) for r in again)
    assert mempool.verifier.verified_count == 299


@pytest.mark.timeout(60)
async def test_a_large_batch_is_verified_in_worker_processes_with_the_same_verdicts(
        monkeypatch):
    from iomtnode.admission import verify as verify_module

    monkeypatch.setattr(verify_module, "PROCESS_MIN_BATCH", 64)
    monkeypatch.setattr(verify_module, "PROCESS_PIECE", 40)
    verifier = Verifier(CHAIN_ID, processes=2)
    txs = [reading("d3", seq) for seq in range(1, 101)]
    txs[57] = forged(txs[57])
    used = []
    real_run = verify_module.trio_parallel.run_sync

    async def counting(fn, *args, **kwargs):
        used.append(len(args[1]))
        return await real_run(fn, *args, **kwargs)

    monkeypatch.setattr(verify_module.trio_parallel, "run_sync", counting)
    errors = await verifier.verify(txs)
    assert sorted(used) == [20, 40, 40]  # three pieces, in worker processes
    assert [i for i, error in enumerate(errors) if error is not None] == [57]
    assert "signature" in str(errors[57])
    assert [tx in verifier for tx in txs].count(True) == 99 and txs[57] not in verifier


async def test_workers_that_cannot_start_leave_warm_a_no_op_with_a_reason(monkeypatch):
    import structlog
    import trio_parallel

    from iomtnode.admission import verify

    async def broken(*args, **kwargs):
        raise trio_parallel.BrokenWorkerError("worker died at start")

    monkeypatch.setattr(verify.trio_parallel, "run_sync", broken)
    verifier = Verifier(CHAIN_ID, processes=2)
    with structlog.testing.capture_logs() as logs:
        await verifier.warm()  # does not raise: starting them early is only a head start
    assert not verifier.warmed
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("verify_workers_not_started", "worker died at start")]
