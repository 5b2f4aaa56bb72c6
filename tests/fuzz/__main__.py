"""The long fuzz run: ``python -m tests.fuzz --executions 1000000``.

Spreads the executions evenly over every target (the p2p decoders, the signed objects, the
client API's JSON and binary entry points on a real node), feeds each its share from
seeded random bytes through Hypothesis (see :mod:`.runner`), and prints per target the
executions, the time and the result; each distinct crash is printed once with its input.
Exits 1 if anything crashed. One core: run it at low priority (``nice``) on a shared host.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from iomtnode import log

from .api import ApiEntry, api_targets, run_with_api
from .runner import Outcome, run_buffers
from .targets import Target, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--executions", type=int, default=100_000,
                        help="total executions, spread evenly over the targets")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--only", action="append", default=[],
                        help="run only the targets whose name starts with this (repeatable)")
    args = parser.parse_args(argv)
    log.configure("error")  # the node of the API targets logs only errors

    current: list[ApiEntry] = []
    chosen_api = api_targets(lambda: current[0])
    wanted = [t for t in targets() + chosen_api
              if not args.only or any(t.name.startswith(p) for p in args.only)]
    share = -(-args.executions // max(1, len(wanted)))
    outcomes: list[Outcome] = []

    def run(items: list[Target]) -> None:
        for target in items:
            outcomes.append(run_buffers(target, share, args.seed))
            print(outcomes[-1].line(), flush=True)

    start = time.perf_counter()
    run([t for t in wanted if t not in chosen_api])
    api = [t for t in wanted if t in chosen_api]
    if api:
        with tempfile.TemporaryDirectory(prefix="iomtnode-fuzz-") as tmp:
            def work(entry: ApiEntry) -> None:
                current.append(entry)
                run(api)

            run_with_api(Path(tmp) / "node", work)
    total = sum(o.executions for o in outcomes)
    crashes = [report for o in outcomes for report in o.crashes.values()]
    print(f"{'total':28} {total:>9} executions {time.perf_counter() - start:8.1f} s  "
          f"{len(outcomes)} targets, {len(crashes)} distinct crash(es)")
    for report in crashes:
        print("\n" + report)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
