"""Memory and bootstrap with a large stored chain (target: peak RSS <= 120 MB for a node
with 1,000,000 readings stored; docs/performance.md).

``python -m iomtnode.bench.large --readings 1000000 --dir DIR [--json]``:

1. builds a one-authority chain of ``--readings`` signed readings straight into a node
   home's LevelDB through :class:`~iomtnode.chain.chain.Chain` (the same build, rules and
   atomic commits a node does; no network, so it is quick). Every reading is signed by its
   device; the sealed payload is made once per device and reused, which changes neither
   the bytes per reading nor the work of a node that stores or syncs it;
2. starts that node as a real process (``iomtnode run``), queries receipts of readings
   spread over the whole chain, and reads its peak RSS (VmHWM);
3. starts a second, empty node with the first as its bootnode and times its block sync to
   the head: readings verified (every signature) and applied per second; and its RSS
   (skipped with ``--no-sync``).

``source_rss_mb`` is the holding node's peak RSS after the queries, ``source_rss_start_mb``
its peak once it answers (before them); ``source_rss_anon_mb`` and ``source_rss_file_mb``
split its RSS after the queries into memory it allocated and pages of files it mapped
(its libraries; LevelDB's tables if they were mapped).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .. import log
from ..chain.chain import Chain
from ..client import open_client
from ..config import Config
from ..core.block import sign_commit
from ..core.tx import Reading, SignedTx, sign_tx
from ..home import Home, init_home
from ..localnet.ports import allocate_ports
from ..localnet.rpc import NodeUnreachable, call_api
from ..sim.vitals import make_devices
from ..store import BlockStore
from .machine import children, disk_bytes, ed25519_verify_rate, proc_usage

BLOCK_READINGS = 10_000  # readings per built block (the node's max_block_txs)
DEVICES = 256
RECEIPT_BLOCKS = 20  # blocks read from the big node (each up to 10,000 readings as JSON)
RECEIPT_QUERIES = 1_000  # receipts fetched from them while its RSS is watched
START_TIMEOUT_S = 120.0
SYNC_TIMEOUT_S = 1800.0


def build_chain(home: Home, readings: int, *, seed: int = 7,
                progress: Any = print) -> dict[str, Any]:
    """Fill ``home`` (a one-authority chain) with ``readings`` readings; return figures."""
    key, genesis = home.load_key(), home.load_genesis()
    devices = make_devices(DEVICES, seed=seed)
    started = time.monotonic()
    with BlockStore.open(home.data_path) as store:
        chain = Chain(store, genesis)

        def seal(txs: list[SignedTx]) -> None:
            built = chain.build(txs, key.public, int(time.time() * 1000))
            if built.rejected:
                raise RuntimeError(f"builder made an invalid reading: {built.rejected[0][1]}")
            commit = sign_commit([key], genesis.chain_id, built.block.height, 0,
                                 built.block.hash)
            chain.commit(built, commit)

        seal([d.admission(key, genesis.chain_id) for d in devices])
        seal([d.epoch_announcement(genesis.chain_id) for d in devices])
        templates = [d.next_reading(genesis.chain_id, int(time.time() * 1000)) for d in devices]
        seqs = [1] * len(devices)
        made = len(devices)  # the template readings are in the first block of readings
        batch: list[SignedTx] = list(templates)
        while made < readings:
            i = made % len(devices)
            seqs[i] += 1
            body = templates[i].body
            assert isinstance(body, Reading)
            reading = Reading(body.device, seqs[i], int(time.time() * 1000), body.epoch,
                              body.size_class, body.commitment)
            batch.append(sign_tx(reading, devices[i].key, genesis.chain_id,
                                 templates[i].sidecar))
            made += 1
            if len(batch) == BLOCK_READINGS:
                seal(batch)
                batch = []
                progress(f"built {made:,} of {readings:,} readings")
        if batch:
            seal(batch)
        height, total = chain.height, chain.committed_txs
    return {"readings": made, "height": height, "txs": total,
            "build_s": round(time.monotonic() - started, 1),
            "disk_bytes_per_reading": round(disk_bytes(home.data_path) / made)}


async def _wait_api(api: str, proc: trio.Process, log: Path) -> None:
    with trio.move_on_after(START_TIMEOUT_S):
        while proc.returncode is None:
            try:
                await call_api(api, "status")
                return
            except NodeUnreachable:
                await trio.sleep(0.2)
    raise RuntimeError(f"node at {api} did not start; see {log}")


def _rss_split_mb(pid: int) -> dict[str, float]:
    """``{"anon": MB, "file": MB}``: the resident memory of ``pid`` it allocated, and the
    resident pages of files it mapped; empty if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {line[3:7].lower(): round(int(line.split()[1]) / 1024, 1) for line in lines
            if line.startswith(("RssAnon:", "RssFile:"))}


async def measure(source: Home, fresh: Home, readings: int, work: Path,
                  progress: Any = print, *, sync: bool = True) -> dict[str, Any]:
    """Start ``source`` (the built chain), query it, then (if ``sync``) time ``fresh``
    syncing from it."""
    result: dict[str, Any] = {}
    url1, url2 = (f"ws://{h.load_config().api_listen}/api/v1" for h in (source, fresh))
    async with trio.open_nursery() as nursery:
        big = await _spawn(nursery, source, work / "source.log")
        await _wait_api(url1, big, work / "source.log")
        usage = proc_usage(big.pid)
        result["source_rss_start_mb"] = round(usage.rss_peak_mb, 1) if usage else None
        progress("querying receipts across the chain")
        async with open_client(url1) as client:
            status = await client.call("status")
            rng = random.Random(1)
            ids: list[str] = []
            for _ in range(RECEIPT_BLOCKS):  # blocks spread over the chain, then receipts
                block = await client.call("get_block", height=rng.randint(2, status["height"]))
                ids += [tx["id"] for tx in block["txs"]]
            for tx_id in rng.sample(ids, min(RECEIPT_QUERIES, len(ids))):
                await client.call("get_receipt", id=tx_id)
        usage = proc_usage(big.pid)
        result["source_rss_mb"] = round(usage.rss_peak_mb, 1) if usage else None
        split = _rss_split_mb(big.pid)
        result |= {f"source_rss_{kind}_mb": mb for kind, mb in split.items()}
        if not sync:
            nursery.cancel_scope.cancel()
            return result
        started = time.monotonic()
        small = await _spawn(nursery, fresh, work / "fresh.log")
        await _wait_api(url2, small, work / "fresh.log")
        with trio.fail_after(SYNC_TIMEOUT_S):
            async with open_client(url2) as client:
                while True:  # the last line shows it level (a small chain syncs at once)
                    now = await client.call("status")
                    progress(f"fresh node at height {now['height']} of {status['height']}")
                    if now["height"] >= status["height"]:
                        break
                    await trio.sleep(0.5)
        elapsed = time.monotonic() - started
        usage = proc_usage(small.pid)
        workers = [u.rss_peak_mb for u in map(proc_usage, children(small.pid)) if u]
        result.update({
            "bootstrap_s": round(elapsed, 1),
            "bootstrap_readings_per_s": round(readings / elapsed),
            "bootstrap_rss_mb": round(usage.rss_peak_mb, 1) if usage else None,
            # its child processes, each on its own: the signature-checking workers and
            # multiprocessing's resource tracker
            "bootstrap_worker_rss_mb": [round(mb, 1) for mb in workers],
        })
        nursery.cancel_scope.cancel()
    return result


async def _spawn(nursery: trio.Nursery, home: Home, log: Path) -> trio.Process:
    cmd = [sys.executable, "-m", "iomtnode", "--log-level", "warning", "--log-json", "run",
           "--home", str(home.path)]
    out = log.open("wb")
    proc: trio.Process = await nursery.start(partial(
        trio.run_process, cmd, stdout=out, stderr=out, check=False))
    return proc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, required=True, help="a new directory to work in")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-sync", action="store_true",
                        help="measure the holding node only, no second node syncing")
    args = parser.parse_args(argv)
    log.configure("warning")  # logs on stderr: stdout holds only the result

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    args.dir.mkdir(parents=True, exist_ok=False)
    verify_rate = ed25519_verify_rate()
    api1, p2p1, api2, p2p2 = allocate_ports(4)
    source = init_home(args.dir / "source", chain_id="iomt-large", config=Config(
        api_listen=f"127.0.0.1:{api1}", p2p_listen=f"127.0.0.1:{p2p1}"))
    fresh = init_home(args.dir / "fresh", genesis=source.load_genesis(), config=Config(
        api_listen=f"127.0.0.1:{api2}", p2p_listen=f"127.0.0.1:{p2p2}",
        bootnodes=(f"127.0.0.1:{p2p1}",)))
    built = build_chain(source, args.readings, progress=progress)
    measured = trio.run(partial(measure, sync=not args.no_sync), source, fresh,
                        built["readings"], args.dir, progress)
    result = {"verify_per_s_one_core": round(verify_rate), **built, **measured}
    print(json.dumps(result, indent=None if args.json else 2, sort_keys=True))


if __name__ == "__main__":  # pragma: no cover
    main()
