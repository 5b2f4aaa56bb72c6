"""The Localnet the chaos e2e tests drive.

Network namespaces add ``netns``, ``isolate`` and ``resources`` to :class:`Localnet`; where
this checkout's Localnet does not have them yet, :class:`LoopbackChaosNet` gives their
loopback meaning (``isolate`` is a partition of one node from the rest, ``resources`` reads
/proc and ``status``), so the same scenarios run on loopback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from iomtnode.localnet import Localnet


class LoopbackChaosNet(Localnet):
    netns = False

    async def isolate(self, name: str) -> None:
        await self.partition([name], [n for n in self.names if n != name])

    async def resources(self, name: str) -> dict[str, Any]:
        pid = self.node(name).proc.pid
        peers = (await self.status(name))["peers"]
        return {"pid": pid, **_proc_figures(pid), "peers": len(peers),
                "remote_addresses": [p["address"] for p in peers]}


def _proc_figures(pid: int) -> dict[str, int]:
    rss_kb = next(int(line.split()[1]) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "rss_bytes": rss_kb * 1024}


ChaosNet: type[Localnet] = Localnet if hasattr(Localnet, "resources") else LoopbackChaosNet
