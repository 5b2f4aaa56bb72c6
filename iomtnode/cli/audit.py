"""``iomtnode audit --patient KEYFILE --scope S --verify``: check, on the patient's machine,
that every node that served the patient's records kept each read in its audit log and removed
none (docs/privacy.md, section 6).

For each node (one ``--api`` each): its anchors on the ledger, as every node given knows them
(so a node cannot hide its latest anchors, and the range it changed, when another is asked
too), each checked by its receipt against the network's genesis (as ``iomtnode verify``
checks a receipt); every anchored leaf
of its log and the records of the patient's streams (the node gives those to the stream
keys this command proves); then :func:`iomtnode.audit.verify.verify_log`. Exit 0 when every
node's log passes, 1 when one fails (the report says which range), 2 on misuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..audit.record import AuditRecord, AuditRecordError, decode_record
from ..audit.verify import VerifyReport, verify_log
from ..client import ApiClient, ApiError, open_client
from ..core.genesis import Genesis, GenesisError
from ..core.receipt import ReceiptError, verify_receipt
from ..core.tx import AuditAnchor
from .common import DEFAULT_API, CaOpt, JsonOpt, api_url, ca_for, emit, fail
from .streams import NOT_FOUND, patient_root, run, stream_key

AUDIT_PAGE_RECORDS = 4_096  # leaves asked per get_audit_log call (the API's limit)
ANCHORS_PAGE = 16  # anchors per get_audit_anchors call (the API's limit)
MAX_ANCHORS = 1_000_000  # of one node: more is not a log this command checks
MAX_SCOPES = 8  # stream keys one connection may prove (the API's limit)
MAX_TAIL_RECORDS = 65_536  # records after the last anchor read to list the caller's there


def checked_anchors(anchors: list[dict[str, Any]], node: bytes, genesis: Genesis
                    ) -> tuple[list[tuple[int, int, bytes]], list[str]]:
    """The anchors whose receipt proves an AuditAnchor of ``node`` with the same range and
    root in a block the genesis's authorities certified; and why each other one was not
    believed (left out, so the records it claims to cover show as a gap)."""
    good: list[tuple[int, int, bytes]] = []
    bad: list[str] = []
    for a in anchors:
        where = f"anchor of records {a['first']} to {a['first'] + a['count'] - 1}"
        try:
            tx, _ = verify_receipt(a["receipt"], genesis)
        except ReceiptError as exc:
            bad.append(f"{where}: its receipt does not verify: {exc}")
            continue
        body = tx.body
        if (not isinstance(body, AuditAnchor) or body.node != node or body.first != a["first"]
                or body.count != a["count"] or body.root.hex() != a["root"]):
            bad.append(f"{where}: its receipt proves another transaction")
            continue
        good.append((body.first, body.count, body.root))
    return sorted(good), bad


async def anchors_of(client: ApiClient, node: bytes) -> list[dict[str, Any]]:
    """Every anchor of ``node``'s log on the ledger, in order, each with its receipt."""
    found: list[dict[str, Any]] = []
    first = 0
    while len(found) < MAX_ANCHORS:
        page = await client.call("get_audit_anchors", node=node.hex(), first=first,
                                 limit=ANCHORS_PAGE)
        found += page
        if len(page) < ANCHORS_PAGE:
            break
        first = page[-1]["first"] + page[-1]["count"]
    return found


async def ledger_anchors(client: ApiClient, others: list[str], ca: Path | None, node: bytes,
                         genesis: Genesis) -> tuple[list[tuple[int, int, bytes]], list[str]]:
    """``node``'s anchors as ``client``'s node and every node at ``others`` list them, each
    believed by its receipt (see :func:`checked_anchors`): the union, and what was not
    believed."""
    good, bad = checked_anchors(await anchors_of(client, node), node, genesis)
    found = set(good)
    for url in others:
        async with open_client(url, ca=ca) as other:
            more, notes = checked_anchors(await anchors_of(other, node), node, genesis)
        found.update(more)
        bad += [f"{note} (as {url} lists it)" for note in notes]
    return sorted(found), bad


async def log_of(client: ApiClient, node: bytes, end: int
                 ) -> tuple[dict[int, bytes], dict[int, AuditRecord], list[str]]:
    """The leaves of records 0 to ``end - 1`` of ``node``'s log (the anchored ones) and the
    records among them the node gives this caller; with the records that do not decode."""
    leaves: dict[int, bytes] = {}
    records: dict[int, AuditRecord] = {}
    problems: list[str] = []
    first = 0
    while first < end:  # an answer may stop short (a node bounds it in bytes): ask on from there
        count = min(AUDIT_PAGE_RECORDS, end - first)
        try:
            page = await client.call("get_audit_log", node=node.hex(), first=first,
                                     count=count)
        except ApiError as exc:  # e.g. a log that lost its tail: the range's check fails
            problems.append(f"records {first} to {end - 1}: the node refused to give them: "
                            f"{exc.message} (code {exc.code})")
            break
        got = page["leaves"][:count]
        if not got:
            problems.append(f"records {first} to {end - 1}: the node gave none of them")
            break
        for i, leaf in enumerate(got):
            leaves[first + i] = bytes.fromhex(leaf)
        for index, raw in page["records"].items():
            try:
                records[int(index)] = decode_record(bytes.fromhex(raw))
            except (AuditRecordError, ValueError) as exc:
                problems.append(f"record {index}: the node gave a malformed record: {exc}")
        first += len(got)
    return leaves, records, problems


async def tail_of(client: ApiClient, node: bytes, end: int
                  ) -> tuple[dict[int, AuditRecord], list[str]]:
    """The records from ``end`` (where the anchors end) to the end of ``node``'s log that the
    node gives this caller, at most :data:`MAX_TAIL_RECORDS` read: the caller's reads not
    anchored yet, listed but not checked; with the records that do not decode."""
    records: dict[int, AuditRecord] = {}
    problems: list[str] = []
    first = end
    while first < end + MAX_TAIL_RECORDS:
        try:
            page = await client.call("get_audit_log", node=node.hex(), first=first,
                                     count=AUDIT_PAGE_RECORDS)
        except ApiError:  # a node that answers no range past its log's end: nothing to list
            break
        if not page["leaves"]:  # the end of the log
            break
        for index, raw in page["records"].items():
            try:
                records[int(index)] = decode_record(bytes.fromhex(raw))
            except (AuditRecordError, ValueError) as exc:
                problems.append(f"record {index}: the node gave a malformed record: {exc}")
        first += len(page["leaves"])
    return records, problems


async def known_stream(client: ApiClient, scope: str, stream: bytes, chain_id: str) -> None:
    """Stop (exit 2) when the ledger knows no such stream: a mistyped scope, whose key the
    node would refuse its log to, is not the node's failure."""
    try:
        await client.call("get_stream", stream=stream.hex())
    except ApiError as exc:
        if exc.code != NOT_FOUND:
            raise
        fail(f"the ledger knows no {scope} stream of this patient key on {chain_id} "
             f"({stream.hex()[:16]}): no device was admitted to it, so no node has its "
             "records to read; check --scope")


async def check_node(url: str, ca: Path | None, root: bytes, scopes: list[str],
                     genesis: Genesis, others: list[str]) -> tuple[VerifyReport, list[str]]:
    """The check of the log of the node at ``url`` (its anchors also asked of the nodes at
    ``others``), and the anchors it could not believe."""
    async with open_client(url, ca=ca) as client:
        status = await client.call("status")
        if status["chain_id"] != genesis.chain_id:
            fail(f"{url} is a node of {status['chain_id']!r}, not of the genesis's "
                 f"{genesis.chain_id!r}")
        if status["genesis_hash"] != genesis.hash.hex():  # another network, the same name
            fail(f"{url} is a node of another network named {genesis.chain_id!r}: its genesis "
                 f"hash is {status['genesis_hash'][:16]}..., the --genesis file's "
                 f"{genesis.hash.hex()[:16]}...; give that network's genesis.json")
        node = bytes.fromhex(status["node_id"])
        anchoring = status["node_id"] in status["authorities"]
        streams = [stream_key(root, genesis.chain_id, scope) for scope in scopes]
        for scope, s in zip(scopes, streams, strict=True):
            await known_stream(client, scope, s.public, genesis.chain_id)
            await client.authenticate(s, genesis.chain_id)
        anchors, bad = await ledger_anchors(client, others, ca, node, genesis)
        end = max((first + count for first, count, _ in anchors), default=0)
        leaves, records, problems = await log_of(client, node, end)
        if not problems:
            tail, more = await tail_of(client, node, end)
            records.update({i: r for i, r in tail.items() if i >= end})
            problems += more
    report = verify_log(anchors, leaves, records, [s.public for s in streams], node=node,
                        anchoring=anchoring)
    return report, bad + problems


async def unchecked_nodes(url: str, ca: Path | None, checked: set[bytes]) -> list[bytes]:
    """The authorities (whose nodes anchor audit logs) with anchors on the ledger, other than
    ``checked``: their logs may hold reads of the patient's records too."""
    async with open_client(url, ca=ca) as client:
        report = await client.call("get_authorities")
        found = []
        for entry in report["authorities"]:
            node = bytes.fromhex(entry["key"])
            if node not in checked and await client.call(
                    "get_audit_anchors", node=node.hex(), first=0, limit=1):
                found.append(node)
    return found


def audit(
    patient: Annotated[Path, typer.Option(help="The patient's key file.")],
    scope: Annotated[list[str], typer.Option(
        help="A scope of the patient's to check (repeat for several).")],
    genesis: Annotated[Path, typer.Option(
        help="The network's genesis.json: the anchors' receipts are checked against it.")],
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check the nodes' audit logs against their anchors.")] = False,
    api: Annotated[list[str] | None, typer.Option(
        "--api", help="The API of a node whose log to check (repeat for each node that "
                      "served the records).")] = None,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that the nodes kept every read of the patient's records in their audit logs: exit
    0 if every log passes, 1 if one fails (saying which range)."""
    if not verify:
        fail("say --verify: checking the logs is what this command does")
    if len(scope) > MAX_SCOPES:
        fail(f"at most {MAX_SCOPES} scopes at once")
    root = patient_root(patient)
    try:
        g = Genesis.load(genesis)
    except GenesisError as exc:
        fail(str(exc))
    urls = [api_url(url) for url in api or [DEFAULT_API]]
    results = [run(check_node, url, ca_for(url, urls, api_ca), root, list(scope), g,
                   [other for other in urls if other != url]) for url in urls]
    checked = {r.node for r, _ in results}
    unchecked = run(unchecked_nodes, urls[0], ca_for(urls[0], urls, api_ca), checked)
    ok = all(r.ok and not notes for r, notes in results)
    doc = {"ok": ok, "nodes": [
        {"node": r.node.hex(), "ok": r.ok and not notes, "authority": r.anchoring,
         "anchored": r.anchored,
         "ranges": r.ranges, "yours": list(r.yours), "unanchored": list(r.unanchored),
         "failures": [str(f) for f in r.failures], "more_failures": r.more_failures,
         "not_believed": notes} for r, notes in results],
        "unchecked": [node.hex() for node in unchecked]}
    text = "\n".join(line for r, notes in results
                     for line in [*r.lines(), *(f"  {n}" for n in notes)])
    text += "".join(f"\nnode {node.hex()[:16]}: anchors an audit log that was not checked "
                    "(give its --api to check it)" for node in unchecked)
    emit(doc, as_json, text)
    if not ok:
        raise typer.Exit(1)

