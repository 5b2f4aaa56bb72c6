"""The authority rules of the state: votes that add or remove an authority, the changes they
schedule and when those take effect, who counts as online, and evidence of equivocation.

Pure, like :mod:`.state`; these functions read and write :class:`~.ledger.State`. A vote
passes with a majority of the current authorities and takes effect
:data:`GOVERNANCE_DELAY_BLOCKS` heights later, so the set that certifies the next block is
always known when a block is made; a change that would leave fewer online authorities than a
quorum is refused (see :func:`_check_quorum_after`).
"""

from __future__ import annotations

from typing import Any

from . import codec
from . import errors as e
from .block import quorum
from .ledger import (
    K_ANCHOR_RANGES,
    K_ANCHORS,
    K_EVIDENCE,
    K_HANDOFFS,
    K_ONLINE,
    K_SCHEDULED,
    K_VOTES,
    NO_STREAM,
    ONLINE_WINDOW_BLOCKS,
    BlockContext,
    State,
)
from .tx import AuditAnchor, AuthorityVote, ReportEvidence

GOVERNANCE_DELAY_BLOCKS = 2  # an authority change takes effect this many heights later

def evidence_key(authority: bytes, height: int, round_: int, vote_type: int) -> bytes:
    return (K_EVIDENCE + authority + height.to_bytes(8, "big") + round_.to_bytes(8, "big")
            + bytes([vote_type]))


def decode_evidence_record(key: bytes, value: bytes) -> dict[str, Any]:
    """A readable view of one ``e`` record (for the API and ``status``)."""
    evidence_hash, included, reporter = codec.decode(value)
    return {
        "authority": key[1:33].hex(), "height": int.from_bytes(key[33:41], "big"),
        "round": int.from_bytes(key[41:49], "big"),
        "type": "prevote" if key[49] == 1 else "precommit",
        "evidence_hash": evidence_hash.hex(), "included_at": included,
        "reporter": reporter.hex(),
    }


def authorities_at(state: State, height: int) -> tuple[bytes, ...]:
    """The authorities of block ``height`` once the changes due by then apply (no writes).

    Called with the state after block ``height - 1`` this is the set that certifies
    ``height``; a vote that passes in block ``h`` takes effect at ``h + 2``, so the set of
    the next block is always known when a block is made."""
    authorities = list(state.authorities())
    for due, subject, add in state.scheduled_changes():
        if due <= height:
            _change(authorities, subject, add, keep_last=True)
    return tuple(authorities)


def _change(authorities: list[bytes], subject: bytes, add: bool, *, keep_last: bool) -> None:
    """Add or remove ``subject`` in place (``keep_last``: never remove the last one)."""
    if add and subject not in authorities:
        authorities.append(subject)
    elif not add and subject in authorities and (len(authorities) > 1 or not keep_last):
        authorities.remove(subject)


def apply_scheduled_changes(state: State, ctx: BlockContext) -> None:
    """Apply the authority changes scheduled for block ``ctx.height`` (the start of the
    block): the new set, the handoff that names it, and the changes still to come."""
    pending = state.scheduled_changes()
    if not any(c[0] <= ctx.height for c in pending):
        return
    before = state.authorities()
    after = authorities_at(state, ctx.height)
    # one that joins is online from its first precommit in a certificate, not before
    for subject in set(before) - set(after):
        state.delete(K_ONLINE + subject)
    if after != before:
        state.set_authorities(after)
        state.put_value(K_HANDOFFS, [*state.handoffs(), [ctx.height - 1, list(after)]])
    rest = [c for c in pending if c[0] > ctx.height]
    if rest:
        state.put_value(K_SCHEDULED, rest)
    else:
        state.delete(K_SCHEDULED)


def require_authority(state: State, key: bytes) -> None:
    if key not in state.authorities():
        raise e.NotAuthorityError(f"{key.hex()[:16]} is not an authority")


def vote(state: State, v: AuthorityVote, ctx: BlockContext) -> None:
    authorities = state.authorities()
    require_authority(state, v.authority)
    if v.add and v.subject in authorities:
        raise e.GovernanceError(f"{v.subject.hex()[:16]} is already an authority")
    if not v.add and v.subject not in authorities:
        raise e.GovernanceError(f"{v.subject.hex()[:16]} is not an authority")
    if v.add and state.device(v.subject) is not None:
        raise e.KeyInUseError("a device key cannot become an authority")
    if v.add and (state.stream_devices(v.subject) or state.stream(v.subject) != NO_STREAM):
        raise e.KeyInUseError("a stream key cannot become an authority")
    key = K_VOTES + v.subject + (b"\x01" if v.add else b"\x00")
    voters = [a for a in (state.get_value(key) or []) if a in authorities]
    if v.authority not in voters:
        voters.append(v.authority)
    elif len(voters) * 2 <= len(authorities):
        raise e.DuplicateVoteError(f"{v.authority.hex()[:16]} already voted on this change")
    # else: the set shrank since these votes were cast and they are now a majority; the
    # repeated vote carries the change (without it, no remaining voter could ever pass it)
    if len(voters) * 2 <= len(authorities):
        state.put_value(key, voters)
        return
    scheduled = state.scheduled_changes()
    _check_quorum_after(state, [*scheduled, [0, v.subject, v.add]], ctx, v)
    state.delete(key)
    state.put_value(K_SCHEDULED,
                     [*scheduled, [ctx.height + GOVERNANCE_DELAY_BLOCKS, v.subject, v.add]])


def report_evidence(state: State, r: ReportEvidence, ctx: BlockContext) -> None:
    require_authority(state, r.reporter)
    evidence = r.proof
    who = evidence.validator.hex()[:16]
    if evidence.height > ctx.height:
        raise e.InvalidEvidenceRuleError(
            f"evidence is of height {evidence.height}, above this block's {ctx.height}")
    if evidence.validator not in state.authorities():
        raise e.InvalidEvidenceRuleError(f"{who} is not a current authority")
    key = evidence_key(evidence.validator, evidence.height, evidence.round,
                       int(evidence.type))
    if state.get(key) is not None:
        raise e.DuplicateEvidenceError(
            f"{who}'s equivocation at height {evidence.height} round {evidence.round} "
            "is already on the ledger")
    state.put_value(key, [evidence.hash, ctx.height, r.reporter])


def _check_quorum_after(state: State, changes: list[list[Any]], ctx: BlockContext,
                        v: AuthorityVote) -> None:
    """Refuse a change after which the authorities online could not reach a quorum.

    Online: certified one of the last :data:`ONLINE_WINDOW_BLOCKS` blocks. The authority
    this vote adds cannot have certified anything yet; the ledger cannot know whether its
    node runs, so it counts as online (the CLI checks that it is a connected peer), but
    only while no other authority is in that state: an earlier addition that has not
    certified a block yet (scheduled, or joined and silent) is offline, and then this
    one is not counted either. One unproven newcomer at a time: two additions of keys
    that never run cannot both pass.
    """
    after = list(state.authorities())
    for _, subject, add in changes:
        _change(after, subject, add, keep_last=False)
    if not after:
        raise e.GovernanceError("this vote would remove the last authority")
    online_now = state.online(ctx.height)
    unproven = [a for a in after if a != v.subject and state.last_certified(a) < 0]
    online = [a for a in after
              if a in online_now or (v.add and a == v.subject and not unproven)]
    need = quorum(len(after))
    if len(online) < need:
        waiting = (f" ({len(unproven)} added before has not certified a block yet, so the "
                   "one being added is not counted: add it once they sign)"
                   if v.add and unproven else "")
        raise e.GovernanceError(
            f"after this change {len(after)} authorities would need {need} precommits per "
            f"block, but only {len(online)} of them certified one of the last "
            f"{ONLINE_WINDOW_BLOCKS} blocks{waiting}; bring the offline authorities back "
            "(or remove them first)")


def anchor_audit(state: State, a: AuditAnchor, tx_id: bytes, height: int) -> None:
    """An audit anchor continues its node's log exactly where the last one ended, and is
    signed by the authority of the node's first anchor (``l <node>`` -> [authority, next
    index]), so the anchors of one node cover its log from index 0 without gap or overlap.
    Each range is kept (``L <node> <u64 first>`` -> [count, root, tx id, height]) so anyone
    can find an anchor and its receipt from the node id alone."""
    require_authority(state, a.authority)
    record = state.get_value(K_ANCHORS + a.node)
    if record is None and a.node != a.authority and a.node in state.authorities():
        raise e.AuditAnchorError(
            f"node {a.node.hex()[:16]} is an authority's: only that authority anchors its "
            f"audit log, not {a.authority.hex()[:16]}")
    authority, next_index = (a.authority, 0) if record is None else record
    if authority != a.authority:
        raise e.AuditAnchorError(
            f"node {a.node.hex()[:16]}'s audit log is anchored by authority "
            f"{authority.hex()[:16]}, not {a.authority.hex()[:16]}")
    if a.first != next_index:
        raise e.AuditAnchorError(
            f"node {a.node.hex()[:16]}'s next audit record to anchor is {next_index}, not "
            f"{a.first}: anchors leave no gap and no overlap")
    state.put_value(K_ANCHORS + a.node, [authority, a.first + a.count])
    state.put_value(K_ANCHOR_RANGES + a.node + a.first.to_bytes(8, "big"),
                    [a.count, a.root, tx_id, height])

