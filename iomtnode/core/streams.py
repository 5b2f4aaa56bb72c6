"""The rules of a patient's streams: epochs, grants, revocations and erasure
(docs/privacy.md, sections 1, 3 and 5). Pure; :mod:`.state` dispatches to them.

A stream is the pseudonym of one patient's scope (its key signs everything here). Its record
``s <stream>`` holds the current epoch and its public key, the live grantees and whether the
whole scope was erased; each grant is ``g <stream> <grantee>``. Devices seal readings to the
current epoch; a reading naming another epoch is refused (1024 below, 1025 above), with no
grace window, so a revoked grantee (whose revocation is also the next epoch) can read nothing
recorded after it.
"""

from __future__ import annotations

from dataclasses import replace

from . import errors as e
from .ledger import BlockContext, GrantRecord, State, Stream
from .txkinds import FORWARD, MAX_GRANTEES, EpochAnnounce, Erase, Grant, RevokeGrant


def known_stream(state: State, stream: bytes) -> Stream:
    """The stream's record, if an active device records into it and it was not erased."""
    if not state.stream_devices(stream):
        raise e.UnknownStreamError(
            f"{stream.hex()[:16]} is not the stream of any active device: only a stream the "
            "ledger knows may announce epochs or grant access to its records")
    record = state.stream(stream)
    if record.erased:
        raise e.ErasedStreamError(f"stream {stream.hex()[:16]} was erased")
    return record


def current_epoch(record: Stream, stream: bytes, epoch: int) -> None:
    """Raise unless ``epoch`` is the stream's current epoch."""
    if record.erased:
        raise e.ErasedStreamError(f"stream {stream.hex()[:16]} was erased")
    if record.epoch == 0:
        raise e.UnknownEpochError(
            f"stream {stream.hex()[:16]} has announced no epoch yet: wait for its first")
    if epoch < record.epoch:
        raise e.StaleEpochError(
            f"epoch {epoch} of stream {stream.hex()[:16]} is over; its current epoch is "
            f"{record.epoch}: re-seal to it and resubmit with the same sequence number")
    if epoch > record.epoch:
        raise e.UnknownEpochError(
            f"epoch {epoch} of stream {stream.hex()[:16]} is not announced (current: "
            f"{record.epoch})")


def _live_grantees(state: State, stream: bytes, record: Stream, now_ms: int
                   ) -> tuple[list[bytes], list[bytes]]:
    """(live, expired) grantees of the stream at ``now_ms``."""
    live, expired = [], []
    for grantee in record.grantees:
        grant = state.grant(stream, grantee)
        (live if grant is not None and grant.expires_ms > now_ms else expired).append(grantee)
    return live, expired


def _next_epoch(state: State, stream: bytes, record: Stream, epoch: int, public: bytes,
                grantees: list[bytes], live: list[bytes], expired: list[bytes]) -> None:
    """Check and apply an epoch announcement whose grantees must be ``live``."""
    if epoch != record.epoch + 1:
        raise e.EpochOrderError(
            f"epoch {epoch} announced; stream {stream.hex()[:16]} is at {record.epoch}, so "
            f"the next is {record.epoch + 1}")
    if list(grantees) != live:
        raise e.GranteeSetError(
            f"the epoch's grantees must be exactly the stream's {len(live)} live grants "
            "(ascending); ask the ledger for them and wrap the epoch for each")
    for grantee in expired:
        state.delete_grant(stream, grantee)
    state.put_stream(stream, replace(record, epoch=epoch, public=public,
                                     grantees=tuple(live)))


def announce(state: State, a: EpochAnnounce, ctx: BlockContext) -> None:
    record = known_stream(state, a.stream)
    live, expired = _live_grantees(state, a.stream, record, ctx.time_ms)
    _next_epoch(state, a.stream, record, a.epoch, a.public, a.grantees, live, expired)


def grant(state: State, g: Grant, ctx: BlockContext, tx_id: bytes) -> None:
    record = known_stream(state, g.stream)
    if g.grantee == g.stream:
        raise e.NotPermittedError("a stream does not need a grant for its own records")
    if g.expires_ms <= ctx.time_ms:
        raise e.ExpiredGrantError(f"grant expires at {g.expires_ms}, before the block time")
    current_epoch(record, g.stream, g.epoch)
    live, expired = _live_grantees(state, g.stream, record, ctx.time_ms)
    if g.grantee not in live and len(live) >= MAX_GRANTEES:
        raise e.TooManyGranteesError(
            f"stream {g.stream.hex()[:16]} has {len(live)} live grants, the most allowed "
            f"({MAX_GRANTEES}); revoke one first")
    for grantee in expired:
        if grantee != g.grantee:
            state.delete_grant(g.stream, grantee)
    first = g.epoch
    if g.grantee in live and g.mode == FORWARD:  # a renewal keeps what the live grant opened
        renewed = state.grant(g.stream, g.grantee)
        if renewed is not None and renewed.mode == FORWARD:
            first = min(first, renewed.first_epoch)
    state.put_grant(g.stream, g.grantee,
                    GrantRecord(g.box, g.mode, g.expires_ms, first, ctx.height, tx_id))
    grantees = tuple(sorted({*live, g.grantee}))
    state.put_stream(g.stream, replace(record, grantees=grantees))


def existing_grant(state: State, r: RevokeGrant) -> None:
    """A grant is revoked by the stream that made it, even once its devices are revoked:
    withdrawing consent is always allowed."""
    if state.grant(r.stream, r.grantee) is None:
        raise e.UnknownGrantError(f"stream {r.stream.hex()[:16]} has no grant to "
                                  f"{r.grantee.hex()[:16]}")


def revoke(state: State, r: RevokeGrant, ctx: BlockContext) -> None:
    existing_grant(state, r)
    record = state.stream(r.stream)
    if record.erased:
        raise e.ErasedStreamError(f"stream {r.stream.hex()[:16]} was erased")
    live, expired = _live_grantees(state, r.stream, record, ctx.time_ms)
    live = [grantee for grantee in live if grantee != r.grantee]
    _next_epoch(state, r.stream, replace(record, grantees=tuple(live)), r.epoch, r.public,
                r.grantees, live, [g for g in expired if g != r.grantee])
    state.delete_grant(r.stream, r.grantee)  # after the checks: a refusal writes nothing


def may_erase(state: State, x: Erase) -> None:
    """The stream key erases its own records; an authority does so on the patient's
    documented request, whose hash it must name."""
    if x.by == x.stream:
        if x.request_hash:
            raise e.NotPermittedError("a stream's own erasure names no request document")
    elif x.by in state.authorities():
        if not x.request_hash:
            raise e.NotPermittedError(
                "an authority erases only on the patient's documented request: name the "
                "request document's hash")
    else:
        raise e.NotPermittedError("only the stream's key or an authority may erase it")
    if not state.stream_devices(x.stream) and state.stream(x.stream).epoch == 0:
        raise e.UnknownStreamError(f"{x.stream.hex()[:16]} is not a stream the ledger knows")


def erase(state: State, x: Erase) -> None:
    """Record the tombstone's effect on the state: a whole-scope erasure marks the stream
    erased and drops its grants (their wraps go from every node's store with the payloads,
    see the chain's writer). A range erasure changes no state: only payloads go."""
    may_erase(state, x)
    record = state.stream(x.stream)
    if record.erased:
        raise e.ErasedStreamError(f"stream {x.stream.hex()[:16]} was already erased")
    if x.whole_scope:
        for grantee in record.grantees:
            state.delete_grant(x.stream, grantee)
        state.put_stream(x.stream, replace(record, grantees=(), erased=True))
