"""``iomtnode authority``: the authority set, governance votes and evidence."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..consensus.signing import (
    SIGNING_LOCK_FILE,
    SIGNING_STATE_FILE,
    SigningLock,
    SigningLockedError,
    SigningStateError,
    SigningStateFile,
    read_signing_record,
    resumed_record,
)
from ..core.tx import AuthorityVote, sign_tx
from .common import (
    DEFAULT_API,
    ApiOpt,
    CaOpt,
    JsonOpt,
    api_url,
    authority_key,
    call,
    emit,
    fail,
    hex32,
    run_async,
)

authority_app = typer.Typer(
    help="The authority set: list it, vote authorities in or out, list evidence.",
    no_args_is_help=True)


@authority_app.command("list")
def authority_list(
    api: ApiOpt = DEFAULT_API, api_ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """The authorities, when each last certified a block, scheduled changes, open votes."""
    report = run_async(lambda: call(api_url(api), "get_authorities", ca=api_ca))
    lines = [f"{a['key']}  last certified {a['last_certified']:>8}  "
             f"{'online ' if a['online'] else 'OFFLINE'}{'  EVIDENCE' if a['evidence'] else ''}"
             for a in report["authorities"]]
    lines += [f"scheduled at {c['height']}: {'add' if c['add'] else 'remove'} {c['subject']}"
              for c in report["scheduled"]]
    lines += [f"open vote to {'add' if v['add'] else 'remove'} {v['subject']}: "
              f"{len(v['voters'])} voter(s)" for v in report["pending_votes"]]
    emit(report, as_json, "\n".join(lines))


@authority_app.command("vote")
def authority_vote(
    subject: Annotated[str, typer.Argument(help="The authority's public key (hex).")],
    home: Annotated[Path, typer.Option("--home", help="An authority's home (its key votes).")],
    add: Annotated[bool | None, typer.Option(
        "--add/--remove", help="Vote to add or to remove (one of them is needed).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        help="Vote to add a key that is not a connected peer of the node.")] = False,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vote, with the authority key in --home, to add or remove an authority.

    A change passes with votes of more than half the authorities; it applies 2 blocks later.

    Refused, with the reason: a change after which the authorities online are not a quorum.

    A new authority counts as online: this command checks it is a connected peer first.
    """
    if add is None:  # typer said "Missing option '--add'", as if --remove were no choice
        fail("give --add or --remove")
    key, genesis = authority_key(home)
    subject_key = hex32("subject", subject)
    url = api_url(api)
    if add and not force:
        status = run_async(lambda: call(url, "status", ca=api_ca))
        if subject not in {p["node_id"] for p in status["peers"]} | {status["node_id"]}:
            fail(f"{subject[:16]} is not connected to this node: start its node first (or "
                 "pass --force)")
    tx = sign_tx(AuthorityVote(key.public, subject_key, add, time.time_ns()), key,
                 genesis.chain_id)
    result = run_async(lambda: call(url, "submit_tx", ca=api_ca, tx=tx.raw.hex()))
    emit(result, as_json,
         f"submitted vote to {'add' if add else 'remove'} {subject[:16]}: {result['id']}")


@authority_app.command("evidence")
def authority_evidence(
    api: ApiOpt = DEFAULT_API, api_ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Equivocations on the ledger: who signed two conflicting votes, where, who reported."""
    records = run_async(lambda: call(api_url(api), "get_evidence", ca=api_ca))
    text = "\n".join(f"{r['authority']} signed two {r['type']}s at height {r['height']} "
                     f"round {r['round']} (reported by {r['reporter'][:16]}, block "
                     f"{r['included_at']})" for r in records) or "no evidence"
    emit({"evidence": records}, as_json, text)


@authority_app.command("resume-signing")
def authority_resume_signing(
    home: Annotated[Path, typer.Option("--home", help="The authority's home.")],
    above: Annotated[int, typer.Option(
        min=0, help="The highest height this key may have signed at.")],
    as_json: JsonOpt = False,
) -> None:
    """Write a lost signing state by hand: from now on the key signs only above --above.

    Only for a home whose signing_state is lost with no backup, and only when no other
    process signs with this key. A lone authority needs it (nobody else can tell what
    it signed); with more authorities the node finds a safe height by itself. Take
    --above from the network: at least the highest head any node reports
    (`iomtnode status`), more if the key may have signed a block none of them holds.

    Refused while this home's node runs, and when the home has a signing state.
    """
    key, _ = authority_key(home)
    store = SigningStateFile(home / SIGNING_STATE_FILE)
    try:
        with SigningLock.acquire(home / SIGNING_LOCK_FILE):
            raw = store.get_meta(SIGNING_STATE_FILE)
            if raw and read_signing_record(raw, key.public) is not None:
                fail(f"{store.path} holds this key's signing state: nothing to resume")
            store.put_meta(SIGNING_STATE_FILE, resumed_record(key.public, above))
    except (SigningLockedError, SigningStateError) as exc:
        fail(str(exc))
    emit({"home": str(home), "signs_above": above}, as_json,
         f"{store.path} written: this key signs only above height {above}")
