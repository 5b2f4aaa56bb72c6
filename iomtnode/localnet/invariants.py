"""What must hold on a localnet whatever the chaos.

``find_violations``: one chain, and nobody far behind (``Localnet.check_invariants``).
``check_*``: the chaos invariants I1-I5, each a :class:`Finding` with its measured figure.

The checks are pure (inputs: statuses, block hashes, tx ids, timings, resource figures), so
they are tested without processes; :mod:`iomtnode.localnet.observe` gathers the inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .rpc import Endpoint, block_hashes, call_api, gather

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


async def invariant_report(apis: Mapping[str, Endpoint], k: int) -> dict[str, Any]:
    """Ask the nodes at ``apis`` ({name: its API}) for their status and block hashes; return
    ``{violations, k, common_height, heights}`` (no violations: the invariants hold)."""
    found = await gather({n: partial(call_api, api, "status", timeout_s=2.0)
                          for n, api in apis.items()})
    violations = [f"{n} did not answer: {s}" for n, s in found.items() if not isinstance(s, dict)]
    statuses = {n: s for n, s in found.items() if isinstance(s, dict)}
    common = min((s["height"] for s in statuses.values()), default=-1)
    heights = list(range(common + 1))
    fetched = await gather({n: partial(block_hashes, apis[n], heights,
                                       timeout_s=30.0 + len(heights) * HASH_FETCH_S)
                            for n in statuses})
    violations += [f"{n} did not return its blocks: {h}" for n, h in fetched.items()
                   if not isinstance(h, list)]
    hashes = {n: h for n, h in fetched.items() if isinstance(h, list)}
    violations += find_violations(statuses, hashes, k)
    return {"violations": violations, "k": k, "common_height": common,
            "heights": {n: s["height"] for n, s in statuses.items()}}


# ---- the chaos invariants I1-I5: pure checks over what was gathered ----------------------

SHOWN_IDS = 5  # ids named in a finding's detail; the counts say the rest


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the chaos invariants allow (a manifest's ``[bounds]``)."""

    resume_s: float = 15.0  # I3: quorum connected -> the next height final on each of it
    converge_s: float = 30.0  # I4: after the last step -> every node at the leader's head
    drain_s: float = 30.0  # I2: how long accepted readings may stay pending at the end
    max_peers: int = 16  # I5: connected peers per node (a 4-node localnet needs 3)
    max_fds: int = 512  # I5: open file descriptors per node process
    max_rss_mb: float = 600.0  # I5: resident memory per node process

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class Finding:
    """One invariant after one run: whether it held, the measured figure, the bound."""

    name: str  # I1 .. I5
    ok: bool
    figure: Any
    bound: Any = None
    detail: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "figure": self.figure, "bound": self.bound,
                "detail": list(self.detail)}


def check_one_block_per_height(chains: Mapping[str, Mapping[int, str]]) -> Finding:
    """I1: no height holds two different blocks on any two nodes (``chains[node][h]`` is
    the hash of node's block at height h, every height it has)."""
    heights = sorted({h for chain in chains.values() for h in chain})
    forks = []
    for height in heights:
        at = {n: c[height] for n, c in chains.items() if height in c}
        if len(set(at.values())) > 1:
            forks.append(f"height {height}: " + ", ".join(
                f"{n}={v[:12]}" for n, v in sorted(at.items())))
    compared = sum(1 for h in heights if sum(h in c for c in chains.values()) > 1)
    return Finding("I1", not forks, {"heights_compared": compared, "forks": len(forks)},
                   detail=tuple(forks[:MAX_FORKS_REPORTED]))


def check_accepted_committed(accepted: Sequence[str], counts: Mapping[str, Mapping[str, int]],
                             dropped: Mapping[str, str]) -> Finding:
    """I2: every accepted id is in exactly one block on every node (``counts[node][id]``:
    its occurrences over that node's blocks), or was reported dropped (``dropped[id]``:
    the reason its client was told). A duplicate is a violation even for a dropped id."""
    wanted = list(dict.fromkeys(accepted))
    detail: list[str] = []
    missing: dict[str, int] = {}
    duplicated: dict[str, int] = {}
    for node, seen in sorted(counts.items()):
        lost = [i for i in wanted if seen.get(i, 0) == 0 and i not in dropped]
        twice = [i for i in wanted if seen.get(i, 0) > 1]
        missing[node], duplicated[node] = len(lost), len(twice)
        if lost:
            detail.append(f"{node}: {len(lost)} accepted readings neither committed nor "
                          f"reported dropped, e.g. {', '.join(i[:16] for i in lost[:SHOWN_IDS])}")
        if twice:
            detail.append(f"{node}: {len(twice)} readings committed more than once, e.g. "
                          f"{', '.join(i[:16] for i in twice[:SHOWN_IDS])}")
    everywhere = sum(1 for i in wanted if all(seen.get(i, 0) == 1 for seen in counts.values()))
    reasons: dict[str, int] = {}
    for i in wanted:
        if i in dropped:
            reasons[dropped[i]] = reasons.get(dropped[i], 0) + 1
    figure = {"accepted": len(wanted), "committed_on_every_node": everywhere,
              "dropped": sum(reasons.values()), "dropped_reasons": reasons,
              "missing": missing, "duplicated": duplicated}
    return Finding("I2", not detail and bool(counts), figure, detail=tuple(detail) or (
        () if counts else ("no node's blocks were read",)))


def check_resumed(measured: Sequence[tuple[str, float | None]], bound_s: float) -> Finding:
    """I3: after each step that left a quorum connected (``(step, seconds)``), every node of
    that quorum finalized a new height within ``bound_s`` (None: it did not, while waited)."""
    late = [f"after {step}: " + ("no new height" if s is None else f"{s:.2f} s")
            for step, s in measured if s is None or s > bound_s]
    times = [s for _, s in measured if s is not None]
    worst = None if not measured else (
        None if len(times) < len(measured) else round(max(times), 3))
    return Finding("I3", not late, {"worst_s": worst, "measured": len(measured)}, bound_s,
                   tuple(late))


def check_converged(seconds: float | None, bound_s: float) -> Finding:
    """I4: after the last step every node reached the head the highest node had then,
    within ``bound_s`` (None: not within the time waited)."""
    ok = seconds is not None and seconds <= bound_s
    detail = () if ok else (("not converged" if seconds is None
                             else f"converged after {seconds:.2f} s"),)
    return Finding("I4", ok, None if seconds is None else round(seconds, 3), bound_s, detail)


def _left(address: str, gone: str) -> bool:
    """``address`` (host:port) is one a peer has left: ``gone`` is host:port, or a host
    (an IP that changed: no port of it is valid any more)."""
    if ":" in gone:
        return address == gone
    return address.rsplit(":", 1)[0] == gone


def check_resources(found: Mapping[str, Mapping[str, Any]], left: Sequence[str],
                    bounds: Bounds) -> Finding:
    """I5: each node's peers, open fds and RSS within ``bounds``, and no connection to an
    address in ``left`` (``found[node]``: peers, fds, rss_bytes, remote_addresses)."""
    detail = [f"{node}: not measured: {r['error']}" for node, r in sorted(found.items())
              if "error" in r]
    found = {node: r for node, r in found.items() if "error" not in r}
    for node, r in sorted(found.items()):
        if r["peers"] > bounds.max_peers:
            detail.append(f"{node}: {r['peers']} peers > {bounds.max_peers}")
        if r["fds"] > bounds.max_fds:
            detail.append(f"{node}: {r['fds']} open fds > {bounds.max_fds}")
        if r["rss_bytes"] > bounds.max_rss_mb * 2**20:
            detail.append(f"{node}: RSS {r['rss_bytes'] / 2**20:.0f} MB > "
                          f"{bounds.max_rss_mb:g} MB")
        stale = [a for a in r.get("remote_addresses", ()) for g in left if _left(a, g)]
        if stale:
            detail.append(f"{node}: still connected to {', '.join(sorted(stale))}, an address "
                          f"its peer has left")
    figure = {"max_peers": max((r["peers"] for r in found.values()), default=None),
              "max_fds": max((r["fds"] for r in found.values()), default=None),
              "max_rss_mb": max((round(r["rss_bytes"] / 2**20, 1) for r in found.values()),
                                default=None),
              "left_addresses": list(left)}
    bound = {"peers": bounds.max_peers, "fds": bounds.max_fds, "rss_mb": bounds.max_rss_mb}
    if not found:
        detail.append("no node's resources were read")
    return Finding("I5", not detail, figure, bound, tuple(detail))
