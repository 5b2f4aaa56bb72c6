"""A ping-like round trip to a node's p2p port, to check the delay a wide-area run applies.

    python -m iomtnode.bench.rtt HOST:PORT [--count 5]    # prints one JSON object

Each probe opens a TCP connection to the node's p2p listener, completes a TLS 1.3 handshake
and then sends one HTTP request (not a websocket upgrade), timing separately the handshake
(one round trip: ClientHello out, the server's Finished back) and the request up to the
first byte of the node's answer (one more round trip). On a delayed localnet the delay proxy
accepts the TCP connection itself, in the prober's namespace, so the connect time is not a
round trip; the two timed exchanges are. The node answers with an HTTP error and the probe
closes: it never becomes a peer.

Run it in a node's namespace (``ip netns exec P-node1 ...``) toward another node to see the
round trip between two nodes, or from the host, whose traffic is delayed only on its way
into the node (one way).
"""

from __future__ import annotations

import json
import socket
import ssl
import statistics
import sys
import time
from typing import Any

from ..p2p.tls import client_context

PROBE_TIMEOUT_S = 10.0  # one probe; above the localnet's largest delay (a few 100 ms)
RETRIES = 20  # a node over its limits for the prober's address answers HTTP 503 before TLS
RETRY_WAIT_S = 0.5  # (its peers' handshakes from the same address in progress): try again
REQUEST = b"GET /rtt-probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
USAGE = "usage: python -m iomtnode.bench.rtt HOST:PORT [--count N]"


def probe(host: str, port: int, context: ssl.SSLContext) -> tuple[float, float]:
    """One probe: (TLS handshake ms, request-to-first-answer-byte ms)."""
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, do_handshake_on_connect=False) as tls:
            started = time.perf_counter()
            tls.do_handshake()
            handshake = time.perf_counter() - started
            started = time.perf_counter()
            tls.sendall(REQUEST)
            tls.recv(1)
            answer = time.perf_counter() - started
    return handshake * 1000, answer * 1000


def measure(host: str, port: int, count: int) -> dict[str, Any]:
    """``count`` probes; the median and the smallest of each exchange, ms."""
    context = client_context()
    handshakes, answers = [], []
    refused = 0
    while len(handshakes) < count:
        try:
            handshake, answer = probe(host, port, context)
        except ssl.SSLError:  # the node's plain-HTTP refusal instead of a TLS answer
            refused += 1
            if refused > RETRIES:
                raise
            time.sleep(RETRY_WAIT_S)
            continue
        handshakes.append(handshake)
        answers.append(answer)
    return {"target": f"{host}:{port}", "count": count, "refused": refused,
            "handshake_ms": {"median": round(statistics.median(handshakes), 2),
                             "min": round(min(handshakes), 2)},
            "request_ms": {"median": round(statistics.median(answers), 2),
                           "min": round(min(answers), 2)}}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    count = 5
    if len(args) == 3 and args[1] == "--count" and args[2].isdigit():
        count = max(1, int(args[2]))
    elif len(args) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    host, _, port = args[0].rpartition(":")
    if not host or not port.isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    try:
        result = measure(host, int(port), count)
    except (OSError, ssl.SSLError) as exc:
        print(f"error: probe of {args[0]} failed: {exc!r}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
