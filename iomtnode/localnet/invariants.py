"""What must hold on a localnet whatever the chaos: one chain, and nobody far behind.

The checks are pure (inputs: each node's status and block hashes), so they are tested
without processes; :meth:`iomtnode.localnet.net.Localnet.check_invariants` gathers the inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from .rpc import block_hashes, call_api, gather

MAX_FORKS_REPORTED = 5  # a fork usually spans many heights; the first few say enough
HASH_FETCH_S = 0.05  # deadline allowance per block fetched, on top of a fixed 30 s


class InvariantError(AssertionError):
    """A localnet invariant that does not hold; ``report`` holds the details."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.violations: list[str] = report["violations"]
        super().__init__("localnet invariants violated:\n  " + "\n  ".join(self.violations))


def find_violations(statuses: Mapping[str, dict[str, Any]], hashes: Mapping[str, list[str]],
                    k: int) -> list[str]:
    """Violations of: same chain id and genesis; every head within ``k`` of the highest;
    the same block hash at every height all nodes have (``hashes[name][h]`` for h = 0..).
    """
    violations: list[str] = []
    if not statuses:
        return ["no running node answered"]
    for field in ("chain_id", "genesis_hash"):
        values = {name: s.get(field) for name, s in statuses.items()}
        if len(set(values.values())) > 1:
            violations.append(f"nodes disagree on {field}: {values}")
    heights = {name: int(s["height"]) for name, s in statuses.items()}
    top = max(heights.values())
    for name, height in sorted(heights.items()):
        if height < top - k:
            violations.append(f"{name} is at height {height}, more than {k} behind the highest "
                              f"head {top}")
    forks = 0
    common = min((len(h) for h in hashes.values()), default=0)
    for height in range(common):
        at = {name: h[height] for name, h in hashes.items()}
        if len(set(at.values())) > 1:
            forks += 1
            if forks <= MAX_FORKS_REPORTED:
                shown = ", ".join(f"{n}={v[:12]}" for n, v in sorted(at.items()))
                violations.append(f"fork at height {height}: {shown}")
    if forks > MAX_FORKS_REPORTED:
        violations.append(f"... {forks - MAX_FORKS_REPORTED} more heights with differing blocks")
    return violations


async def invariant_report(urls: Mapping[str, str], k: int) -> dict[str, Any]:
    """Ask the nodes at ``urls`` ({name: API URL}) for their status and block hashes; return
    ``{violations, k, common_height, heights}`` (no violations: the invariants hold)."""
    found = await gather({n: partial(call_api, url, "status", timeout_s=2.0)
                          for n, url in urls.items()})
    violations = [f"{n} did not answer: {s}" for n, s in found.items() if not isinstance(s, dict)]
    statuses = {n: s for n, s in found.items() if isinstance(s, dict)}
    common = min((s["height"] for s in statuses.values()), default=-1)
    heights = list(range(common + 1))
    fetched = await gather({n: partial(block_hashes, urls[n], heights,
                                       timeout_s=30.0 + len(heights) * HASH_FETCH_S)
                            for n in statuses})
    violations += [f"{n} did not return its blocks: {h}" for n, h in fetched.items()
                   if not isinstance(h, list)]
    hashes = {n: h for n, h in fetched.items() if isinstance(h, list)}
    violations += find_violations(statuses, hashes, k)
    return {"violations": violations, "k": k, "common_height": common,
            "heights": {n: s["height"] for n, s in statuses.items()}}
