"""nftables rules for faults with real packets, one table per node namespace.

Each node's namespace holds at most one table, ``inet iomt_faults``, rendered whole from that
node's :class:`NodeRules` and loaded atomically (``nft -f``: add, delete, define in one
transaction), so a fault is undone by rendering the rules without it. The host's address on
the bridge is never dropped, so API calls keep working during every fault.

- blocked peers: every packet from or to their addresses is dropped (a partition, a cut link,
  an isolated node). Connections go silent, as on a real network, and die by ping timeout.
- loss: ``numgen random`` drops that share of the node's packets to other nodes, and of the
  packets from nodes that are not lossy themselves (so a packet between two lossy nodes is
  dropped with that probability once, not twice).
- delay: TCP to a p2p port is redirected to a delay proxy in the namespace (see
  :mod:`iomtnode.localnet.delayproxy`): inbound connections in prerouting, the node's own
  outbound connections in output. The proxy's upstream connections carry ``PROXY_MARK``
  (copied to their conntrack entry) and pass unredirected. NAT only redirects a connection
  when it is made, so the p2p connections the node already has, which would keep flowing
  direct, are cut: every packet of a p2p connection on ``eth0`` that is neither redirected
  nor the proxy's is rejected with a TCP reset (the peer gets one for each of its packets,
  the node for each of its own), and both ends re-dial through the proxy. Resets themselves
  pass, so a reset the kernel sends for a closed socket still ends the other side.
"""

from __future__ import annotations

from dataclasses import dataclass

from .netns import IFACE, P2P_PORT

TABLE = "iomt_faults"
PROXY_PORT = 7091  # the delay proxy's listener inside a delayed node's namespace
PROXY_MARK = 0x10E7  # SO_MARK of the proxy's upstream connections: not redirected again
BASIS_POINTS = 10_000  # loss is drawn as numgen random mod 10000 < percent * 100
NOT_RESET = "tcp flags & rst == 0"  # resets pass the rules that cut direct connections
NAT_PRIORITY = -100  # dstnat, written as a number (older nft names it for prerouting only)


@dataclass(frozen=True, slots=True)
class NodeRules:
    """Everything one node's namespace should drop or delay; empty = no table."""

    host_ip: str  # the bridge address: control traffic, never dropped
    blocked: tuple[str, ...] = ()  # peer addresses cut off both ways
    loss_percent: float = 0.0  # this node's share of dropped packets
    lossy_peers: tuple[str, ...] = ()  # peers that drop on their own output already
    delayed: bool = False  # p2p traffic into this node goes through its delay proxy
    p2p_port: int = P2P_PORT

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss_percent <= 100.0:
            raise ValueError("loss_percent must be between 0 and 100")
        if self.host_ip in self.blocked:
            raise ValueError("the host's address is never blocked (API calls go through it)")

    @property
    def empty(self) -> bool:
        return not self.blocked and self.loss_bp == 0 and not self.delayed

    @property
    def loss_bp(self) -> int:
        return round(self.loss_percent * BASIS_POINTS / 100)


def _set(addresses: tuple[str, ...]) -> str:
    return "{ " + ", ".join(sorted(addresses)) + " }"


def render(rules: NodeRules) -> str:
    """The ``nft -f`` script that makes the node's table exactly ``rules``."""
    script = [f"add table inet {TABLE}", f"delete table inet {TABLE}"]
    if rules.empty:
        return "\n".join(script) + "\n"
    inp = ["type filter hook input priority filter; policy accept;"]
    out = ["type filter hook output priority filter; policy accept;"]
    if rules.blocked:
        inp.append(f"ip saddr {_set(rules.blocked)} counter drop")
        out.append(f"ip daddr {_set(rules.blocked)} counter drop")
    if rules.loss_bp:
        # nft refuses a bound equal to the modulus (mod 10000 yields 0-9999): 100 % drops all
        draw = ("counter drop" if rules.loss_bp >= BASIS_POINTS
                else f"numgen random mod {BASIS_POINTS} < {rules.loss_bp} counter drop")
        spared = _set((rules.host_ip, *rules.lossy_peers))
        inp.append(f'iifname "{IFACE}" ip saddr != {spared} {draw}')
        out.append(f'oifname "{IFACE}" ip daddr != {rules.host_ip} {draw}')
    chains = {"input": inp, "output": out}
    if rules.delayed:
        port = rules.p2p_port
        mark = f"{PROXY_MARK:#x}"
        cut = f"{NOT_RESET} counter reject with tcp reset"
        # Direct connections: a peer's to the node (redirected ones reach the filter hooks
        # on PROXY_PORT, and the proxy's upstream to the node runs on lo), and the node's
        # to a peer (not the proxy's, whose packets and conntrack entry carry the mark).
        inp += [f'iifname "{IFACE}" tcp dport {port} {cut}',
                f'iifname "{IFACE}" tcp sport {port} ct mark != {mark} {cut}']
        out += [f"meta mark {mark} ct mark set {mark}",
                f'oifname "{IFACE}" tcp sport {port} {cut}',
                f'oifname "{IFACE}" tcp dport {port} ct mark != {mark} {cut}']
        chains["delay_in"] = [
            f"type nat hook prerouting priority {NAT_PRIORITY}; policy accept;",
            f'iifname "{IFACE}" tcp dport {port} counter redirect to :{PROXY_PORT}']
        chains["delay_out"] = [
            f"type nat hook output priority {NAT_PRIORITY}; policy accept;",
            f'oifname "{IFACE}" meta mark != {mark} tcp dport {port} '
            f"counter redirect to :{PROXY_PORT}"]
    script.append(f"table inet {TABLE} {{")
    for name, lines in chains.items():
        script.append(f"  chain {name} {{")
        script += [f"    {line}" for line in lines]
        script.append("  }")
    script.append("}")
    return "\n".join(script) + "\n"
