"""Bootstrap: a fresh node (empty home, same genesis, not an authority) syncs the chain the
run made from the other nodes; how many readings/s it verifies and applies."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from ..admission.verify import usable_cores
from ..client import open_client
from ..localnet import Localnet, LocalnetTimeout
from ..localnet.layout import MANIFEST_NAME
from .machine import ed25519_verify_rate, proc_usage, tree_cpu_s
from .progress import NullReporter, Reporter

POLL_S = 0.2  # the fresh node's status, asked this often: each answer costs its trio
# thread about a millisecond, which it would otherwise spend syncing
BOOTSTRAP_TIMEOUT_S = 180.0
EPISODE_WAIT_S = 10.0  # from reaching the head to the catch-up's end (level with every peer)


async def measure_bootstrap(net: Localnet, *, readings: int, non_readings: int,
                            reporter: Reporter, timeout_s: float = BOOTSTRAP_TIMEOUT_S
                            ) -> dict[str, Any]:
    """Start a fresh node and wait until it reaches node1's head height; its rate is the
    readings of the chain over the seconds of its catch-up as the node itself timed it
    (``status`` ``catch_ups``: from its first block asked to the last committed, every
    signature verified and every block checked and applied). The time from the process's
    spawn is reported beside it: it adds the start of a Python process (imports, about a
    second), which is not syncing. So is the CPU the node spent per reading from its API's
    first answer to the end, in its own process (decoding, checking, storing: ``main``)
    and in its verifying worker processes (``workers``).

    ``readings`` and ``non_readings`` count the chain's transactions (the others are device
    admissions and their streams' epochs).
    """
    source = net.names[0]
    head = (await net.status(source))["height"]
    reporter.begin(f"bootstrap, {head:,} blocks", total=head)
    t0 = time.monotonic()
    name = await net.add_node()
    proc = net.node(name).proc
    assert proc is not None  # started
    start_cpu = _cpu_s(proc.pid)  # its start (imports) done: its API answers
    status: dict[str, Any] = {"height": -1}
    with trio.move_on_after(timeout_s):
        async with open_client(net.node(name).api) as client:
            status = await client.call("status")
            while status["height"] < head:
                await trio.sleep(POLL_S)
                status = await client.call("status")
                reporter.advance(status["height"])
            from_spawn = time.monotonic() - t0
            with trio.move_on_after(EPISODE_WAIT_S):
                while not _from_genesis(status):  # the episode ends once level with every peer
                    await trio.sleep(POLL_S)
                    status = await client.call("status")
    main_cpu, workers_cpu = (b - a for a, b in zip(start_cpu, _cpu_s(proc.pid), strict=True))
    if status["height"] < head:
        raise LocalnetTimeout(f"bootstrap: {name} reached height {status['height']} of {head} "
                              f"in {timeout_s} s; see {net.node(name).log}")
    episode = _from_genesis(status)
    if episode is None:
        raise LocalnetTimeout(f"bootstrap: {name} reached the head but reported no catch-up "
                              f"from height 0 within {EPISODE_WAIT_S} s; see {net.node(name).log}")
    synced_readings = status["committed_txs"] - non_readings
    seconds = float(episode["seconds"])
    rate = (episode["txs"] - non_readings) / seconds if seconds > 0 else 0.0
    reporter.end(f"{rate:,.0f} readings/s")
    return {
        "node": name,
        "height": head,
        "seconds": round(seconds, 3),
        "readings": readings,
        "readings_found": synced_readings,
        "readings_per_s": round(rate),
        "seconds_from_spawn": round(from_spawn, 3),
        "readings_per_s_from_spawn": round(synced_readings / from_spawn) if from_spawn else 0,
        "cpu_us_per_reading": {"main": round(main_cpu / readings * 1e6, 1),
                               "workers": round(workers_cpu / readings * 1e6, 1)},
    }


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds so far of node process ``pid`` itself and of its verifying workers."""
    usage = proc_usage(pid)
    if usage is None:
        return 0.0, 0.0
    return usage.cpu_s, tree_cpu_s(pid, usage) - usage.cpu_s


def _from_genesis(status: dict[str, Any]) -> dict[str, Any] | None:
    """The fresh node's catch-up from height 0 (its first), once it has ended."""
    return next((e for e in status.get("catch_ups", []) if e["from_height"] == 0), None)


# the bootstrap phase alone, again, on the chain an earlier run kept (``bench --out DIR``) --

BENCH_JSON = "bench.json"
LOCALNET = "localnet"
MEASURE_TIMEOUT_S = 300.0  # the whole measure: nodes started, the chain synced


def copy_chain(bench_dir: Path, to: Path) -> int:
    """Copy the authorities of the localnet that ``iomtnode bench --out bench_dir`` kept to
    ``to`` (a new directory), without the nodes it added (the run's own bootstrap node) and
    with its processes forgotten; returns the readings of its chain (its ``bench.json``)."""
    result = json.loads((bench_dir / BENCH_JSON).read_text())
    source = bench_dir / LOCALNET
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    nodes = [n for n in manifest["nodes"] if n["authority"]]
    to.mkdir(parents=True)
    for node in nodes:
        shutil.copytree(source / node["name"], to / node["name"],
                        ignore=shutil.ignore_patterns("node.log"))
        node.update(home=str(to / node["name"]), pid=None, pid_start=None)
    manifest.update(dir=str(to), nodes=nodes, simulator=None, supervisor=None, proxies={})
    (to / MANIFEST_NAME).write_text(json.dumps(manifest))
    (to / MANIFEST_NAME).chmod(0o600)
    return int(result["bootstrap"]["readings"])


async def bootstrap_only(bench_dir: Path, env: dict[str, str],
                         reporter: Reporter) -> dict[str, Any]:
    """The bootstrap phase alone on a copy of the chain ``bench --out bench_dir`` made:
    the verify rate of one core first (nodes idle, as the run's ceiling), then the fresh
    node's sync; its rate also as a ratio to every core's verify rate, and the CPU the
    nodes that served it spent per reading meanwhile."""
    cores = usable_cores()
    verify = ed25519_verify_rate()
    with tempfile.TemporaryDirectory(prefix="iomtnode-bootstrap-") as tmp:
        path = Path(tmp) / LOCALNET
        readings = copy_chain(bench_dir, path)
        with trio.fail_after(MEASURE_TIMEOUT_S):
            async with Localnet.start(path=path, env=env) as net:
                committed = (await net.status(net.names[0]))["committed_txs"]
                serving = list(net.names)
                before = _serving_cpu_s(net, serving)
                result = await measure_bootstrap(net, readings=readings,
                                                 non_readings=committed - readings,
                                                 reporter=reporter)
                served_cpu = _serving_cpu_s(net, serving) - before
    return {"verify_per_s_one_core": round(verify), "cores": cores,
            "verify_ratio": round(result["readings_per_s"] / (verify * cores), 3),
            "serving_cpu_us_per_reading": round(served_cpu / readings * 1e6, 1),
            "uptime_load": os.getloadavg(), "bootstrap": result}


def _serving_cpu_s(net: Localnet, names: list[str]) -> float:
    """CPU seconds so far of the nodes ``names`` (that serve the fresh node), together."""
    return sum(sum(_cpu_s(proc.pid)) for name in names
               if (proc := net.node(name).proc) is not None)


def main(argv: list[str] | None = None) -> None:
    """``python -m iomtnode.bench.bootstrap DIR [--runs N]``: the bootstrap phase alone on
    the chain ``iomtnode bench --out DIR`` kept, N times; one JSON object per run."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("bench_dir", type=Path, help="an earlier `iomtnode bench --out` DIR")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    env = json.loads((args.bench_dir / BENCH_JSON).read_text())["node_env"]  # the run's
    for _ in range(args.runs):
        result = trio.run(bootstrap_only, args.bench_dir, env, NullReporter())
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
