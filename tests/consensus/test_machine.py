"""The consensus state machine, driven by scripted inputs (scenario tables) and by a bus.

Validators are named A, B, C, ... (keys derived from the names). Scripts and expected
actions are short strings:

    inputs:  start | prop B 0 X [pol=1] [invalid] | pv C 0 X | pc C 0 nil [h=6]
             | timeout propose 0 | ready X
    actions: build 0 | propose 0 X pol=-1 | prevote 0 X | precommit 0 nil
             | wait propose 0 | commit 0 X by ABC | evidence D

At height 5 with A B C D the proposers are: round 0 B, 1 C, 2 D, 3 A, 4 B.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iomtnode.consensus.machine import (
    Action,
    BlockReady,
    BroadcastProposal,
    BroadcastVote,
    BuildBlock,
    Commit,
    Event,
    Machine,
    Params,
    ProposalReceived,
    ReportEvidence,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    TimeoutKind,
    VoteReceived,
)
from iomtnode.consensus.votes import SigningState, Step, commit_certificate, sign_proposal
from iomtnode.core.crypto import blake2b256
from iomtnode.core.vote import NIL, VoteType, sign_vote

from ..core.helpers import CHAIN_ID, key, pub

H = 5
ALL_NAMES = "ABCDEFG"
NAME_OF = {pub(n): n for n in ALL_NAMES}
BLOCKS = {name: blake2b256(f"block {name}".encode()) for name in "XYZ"}
BLOCKS["nil"] = NIL
BLOCK_NAME = {v: k for k, v in BLOCKS.items()}
KINDS = {k.value: k for k in TimeoutKind}


def parse(line: str) -> Event:
    """One scripted input (see the module docstring)."""
    word, *args = line.split()
    opts = dict(a.split("=") for a in args if "=" in a)
    args = [a for a in args if "=" not in a]
    height = int(opts.get("h", H))
    match word:
        case "start":
            return Start(0.0)
        case "prop":
            name, round_, block = args[0], int(args[1]), BLOCKS[args[2]]
            p = sign_proposal(key(name), CHAIN_ID, height, round_, block,
                              int(opts.get("pol", -1)))
            return ProposalReceived(p, "invalid" not in args)
        case "pv" | "pc":
            vote_type = VoteType.PREVOTE if word == "pv" else VoteType.PRECOMMIT
            v = sign_vote(key(args[0]), CHAIN_ID, vote_type, height, int(args[1]),
                          BLOCKS[args[2]])
            return VoteReceived(v)
        case "timeout":
            return TimeoutFired(KINDS[args[0]], height, int(args[1]))
        case "ready":
            return BlockReady(BLOCKS[args[0]])
    raise ValueError(f"bad script line {line!r}")


def show(action: Action) -> str:
    """One action as a short string (see the module docstring)."""
    match action:
        case BuildBlock(_, round_):
            return f"build {round_}"
        case BroadcastProposal(_, round_, block, pol):
            return f"propose {round_} {BLOCK_NAME[block]} pol={pol}"
        case BroadcastVote(vote_type, _, round_, block):
            return f"{vote_type.name.lower()} {round_} {BLOCK_NAME[block]}"
        case ScheduleTimeout(kind, _, round_, _):
            return f"wait {kind.value} {round_}"
        case Commit(_, round_, block, precommits):
            signers = "".join(sorted(NAME_OF[v.validator] for v in precommits))
            return f"commit {round_} {BLOCK_NAME[block]} by {signers}"
        case ReportEvidence(evidence):
            return f"evidence {NAME_OF[evidence.validator]}"
    raise AssertionError(action)


def machine(me: str | None, names: str = "ABCD", **kw: object) -> Machine:
    return Machine(H, tuple(pub(n) for n in names), pub(me) if me else None, **kw)  # type: ignore[arg-type]


def run(m: Machine, script: list[str]) -> list[str]:
    return [show(a) for line in script for a in m.step(parse(line))]


# Shared script pieces.
LOCK_X = ["start", "prop B 0 X", "pv A 0 X", "pv B 0 X", "pv C 0 X"]  # A locks X in round 0
LOCK_X_OUT = ["wait propose 0", "prevote 0 X", "wait prevote 0", "precommit 0 X"]
NO_DECISION_0 = ["pc A 0 X", "pc B 0 nil", "pc C 0 nil", "timeout precommit 0"]
NO_DECISION_0_OUT = ["wait precommit 0", "wait propose 1"]


@dataclass(frozen=True)
class Case:
    id: str
    me: str | None
    script: list[str]
    expect: list[str]
    names: str = "ABCD"


CASES = [
    # happy path: B proposes X, a quorum prevotes X (A locks, precommits), then commits
    Case("happy", "A",
         [*LOCK_X, "pc B 0 X", "pc C 0 X", "pc A 0 X"],
         [*LOCK_X_OUT, "commit 0 X by ABC"]),
    # the proposer builds a block, proposes it, then votes like everyone else
    Case("proposer", "B",
         ["start", "ready X", "prop B 0 X", "pv A 0 X", "pv B 0 X", "pv D 0 X",
          "pc A 0 X", "pc B 0 X", "pc D 0 X"],
         ["build 0", "wait propose 0", "propose 0 X pol=-1", "prevote 0 X", "wait prevote 0",
          "precommit 0 X", "commit 0 X by ABD"]),
    # silent proposer: nil prevote after timeout_propose, nil precommits, round 1 (C proposes)
    Case("silent", "A",
         ["start", "timeout propose 0", "pv A 0 nil", "pv B 0 nil", "pv C 0 nil",
          "pc A 0 nil", "pc B 0 nil", "pc C 0 nil", "timeout precommit 0", "prop C 1 Y"],
         ["wait propose 0", "prevote 0 nil", "wait prevote 0", "precommit 0 nil",
          "wait precommit 0", "wait propose 1", "prevote 1 Y"]),
    # silent proposer, seen by the next one: C builds for round 1
    Case("silent-next", "C",
         ["start", "timeout propose 0", "pv A 0 nil", "pv B 0 nil", "pv C 0 nil",
          "pc A 0 nil", "pc B 0 nil", "pc C 0 nil", "timeout precommit 0", "ready Y"],
         ["wait propose 0", "prevote 0 nil", "wait prevote 0", "precommit 0 nil",
          "wait precommit 0", "build 1", "wait propose 1", "propose 1 Y pol=-1"]),
    # the block comes after the propose timeout: too late, B has prevoted nil already
    Case("late-block", "B", ["start", "timeout propose 0", "ready X"],
         ["build 0", "wait propose 0", "prevote 0 nil"]),
    # an invalid block gets a nil prevote
    Case("invalid-block", "A", ["start", "prop B 0 X invalid"],
         ["wait propose 0", "prevote 0 nil"]),
    # a proposal from the wrong proposer is ignored
    Case("wrong-proposer", "A", ["start", "prop C 0 X"], ["wait propose 0"]),
    # locked on X in round 0; round 1 proposes Y without a POL: nil
    Case("locked-no-pol", "A",
         [*LOCK_X, *NO_DECISION_0, "prop C 1 Y"],
         [*LOCK_X_OUT, *NO_DECISION_0_OUT, "prevote 1 nil"]),
    # locked on X; round 1 re-proposes X: prevote X
    Case("locked-same", "A",
         [*LOCK_X, *NO_DECISION_0, "prop C 1 X"],
         [*LOCK_X_OUT, *NO_DECISION_0_OUT, "prevote 1 X"]),
    # locked on X; Y claims a POL in round 0 that is not there: wait, then nil on timeout
    Case("locked-false-pol", "A",
         [*LOCK_X, *NO_DECISION_0, "prop C 1 Y pol=0", "timeout propose 1"],
         [*LOCK_X_OUT, *NO_DECISION_0_OUT, "prevote 1 nil"]),
    # locked on X in round 0; Y has a quorum of prevotes in round 1 and is re-proposed in
    # round 2 with pol=1: the later POL unlocks A, which prevotes Y
    Case("unlock-later-pol", "A",
         [*LOCK_X, "prop D 2 Y pol=1", "pv B 1 Y", "pv C 1 Y", "pv D 1 Y",
          "pv B 2 Y", "pv C 2 Y", "pv A 2 Y"],
         [*LOCK_X_OUT, "wait propose 1", "wait propose 2", "prevote 2 Y", "wait prevote 2",
          "precommit 2 Y"]),
    # the same, but the POL votes have not arrived: no prevote for Y
    Case("unlock-pol-missing", "A",
         [*LOCK_X, "prop D 2 Y pol=1", "pv B 2 Y", "pv C 2 Y", "timeout propose 2"],
         [*LOCK_X_OUT, "wait propose 2", "prevote 2 nil"]),
    # a proposer with a valid value re-proposes it with its POL round
    Case("repropose-valid", "A",
         [*LOCK_X, "pv B 3 nil", "pv C 3 nil"],
         [*LOCK_X_OUT, "propose 3 X pol=0", "wait propose 3"]),
    # D prevotes X then Y: evidence once; D counts once towards "any" (no prevote timeout
    # with A, D) and once for each block (X reaches a quorum with A, C, D)
    Case("equivocation", "A",
         ["start", "prop B 0 X", "pv A 0 X", "pv D 0 X", "pv D 0 Y", "pv D 0 Y",
          "pv D 0 nil", "pv B 0 Y", "pv C 0 X"],
         ["wait propose 0", "prevote 0 X", "evidence D", "wait prevote 0", "precommit 0 X"]),
    # duplicates count once: two votes from B and C are not a quorum
    Case("duplicates", "A",
         ["start", "pv B 0 nil", "pv B 0 nil", "pv C 0 nil", "pv C 0 nil", "pc B 0 nil",
          "pc B 0 nil", "pc C 0 nil", "timeout propose 0", "pv A 0 nil"],
         ["wait propose 0", "prevote 0 nil", "wait prevote 0", "precommit 0 nil"]),
    # late round-0 prevotes in round 1 do nothing; late round-0 precommits decide
    Case("late", "A",
         ["start", "pc B 1 nil", "pc C 1 nil", "pv B 0 X", "pv C 0 X", "pv D 0 X",
          "prop B 0 X", "pc B 0 X", "pc C 0 X", "pc D 0 X"],
         ["wait propose 0", "wait propose 1", "commit 0 X by BCD"]),
    # one validator ahead in round 2 is buffered, no skip; f+1 = 2 skip to round 2 and
    # the buffered proposal gets a prevote
    Case("future-skip", "A",
         ["start", "prop D 2 Y", "pv C 2 Y", "pc C 2 nil", "pv D 2 Y"],
         ["wait propose 0", "wait propose 2", "prevote 2 Y"]),
    # skip into a round where A is the proposer: it builds
    Case("skip-to-own", "A", ["start", "pv B 3 nil", "pv C 3 nil"],
         ["wait propose 0", "build 3", "wait propose 3"]),
    # split precommits: precommit timeout, then round 1; a stale timeout does nothing
    Case("precommit-timeout", "A",
         ["start", "pc A 0 X", "pc B 0 nil", "pc C 0 Y", "timeout precommit 0",
          "timeout precommit 0", "timeout propose 0", "timeout prevote 0"],
         ["wait propose 0", "wait precommit 0", "wait propose 1"]),
    # messages for other heights are not for this machine
    Case("other-height", "A",
         ["start", "prop B 0 X h=6", "pv B 0 X h=6", "pv C 0 X h=4", "timeout propose 0 h=6"],
         ["wait propose 0"]),
    # an observer (no key) never signs but decides from the validators' votes
    Case("observer", None,
         ["start", "prop B 0 X", "pv B 0 X", "pv C 0 X", "pv D 0 X", "pc B 0 X", "pc C 0 X",
          "pc D 0 X"],
         ["wait propose 0", "wait prevote 0", "commit 0 X by BCD"]),
    # a key outside the validator set is an observer too
    Case("outsider", "E", ["start", "prop B 0 X", "timeout propose 0"], ["wait propose 0"]),
    # 7 validators (quorum 5, f+1 = 3), proposer of round 0 is F: 4 prevotes are not enough
    Case("seven", "A",
         ["start", "prop F 0 X", "pv A 0 X", "pv B 0 X", "pv C 0 X", "pv D 0 X", "pv E 0 X",
          "pc A 0 X", "pc B 0 X", "pc C 0 X", "pc D 0 X", "pc E 0 X"],
         ["wait propose 0", "prevote 0 X", "wait prevote 0", "precommit 0 X",
          "commit 0 X by ABCDE"], names="ABCDEFG"),
    # 7 validators: 2 ahead do not make A skip, 3 do
    Case("seven-skip", "A",
         ["start", "pv B 1 nil", "pv C 1 nil", "pv D 1 nil"],
         ["wait propose 0", "wait propose 1"], names="ABCDEFG"),
    # after the decision, nothing more happens
    Case("decided", "A",
         [*LOCK_X, "pc B 0 X", "pc C 0 X", "pc A 0 X", "pc D 0 X", "timeout precommit 0",
          "pv B 1 nil", "pv C 1 nil"],
         [*LOCK_X_OUT, "commit 0 X by ABC"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_scenario(case: Case) -> None:
    assert run(machine(case.me, case.names), case.script) == case.expect


# timeouts ------------------------------------------------------------------------------


def test_round_timeouts_grow_and_stop_at_the_cap() -> None:
    m = machine("A", params=Params(timeout_propose_s=1.0, timeout_delta_s=0.5,
                                   timeout_cap_s=4.0))
    delays = [a.delay_s for a in m.step(Start(0.0)) if isinstance(a, ScheduleTimeout)]
    for round_ in range(10):
        delays += [a.delay_s for a in m.step(TimeoutFired(TimeoutKind.PRECOMMIT, H, round_))
                   if isinstance(a, ScheduleTimeout)]
    assert delays == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.0, 4.0, 4.0, 4.0]
    p = Params()
    assert [p.timeout(TimeoutKind.PREVOTE, r) for r in (0, 1, 19, 100)] == [0.5, 1.0, 10.0, 10.0]


@pytest.mark.parametrize("bad", [dict(timeout_propose_s=0.0), dict(timeout_delta_s=-1.0),
                                 dict(timeout_cap_s=0.7)])
def test_params_refuse_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Params(**bad)


# restart safety ------------------------------------------------------------------------


def restarted(m: Machine, me: str = "A") -> Machine:
    """A machine rebuilt from ``m``'s persisted signing state, as after a crash."""
    state = SigningState.from_bytes(m.signing_state.to_bytes())
    return machine(me, restored=state)


def test_restart_after_prevote_does_not_prevote_again() -> None:
    m = machine("A")
    assert run(m, ["start", "prop B 0 X"]) == ["wait propose 0", "prevote 0 X"]
    m2 = restarted(m)
    # the proposal is lost; the propose timeout would prevote nil, but A prevoted X already
    assert run(m2, ["start", "timeout propose 0", "prop B 0 X"]) == ["wait propose 0"]
    # it still precommits on a polka: that is a new step
    assert run(m2, ["pv A 0 X", "pv B 0 X", "pv C 0 X"]) == ["wait prevote 0", "precommit 0 X"]


def test_restart_keeps_the_lock() -> None:
    m = machine("A")
    assert run(m, LOCK_X) == LOCK_X_OUT
    m2 = restarted(m)
    assert (m2.locked_round, m2.locked_value) == (0, BLOCKS["X"])
    # round 0 again: no second vote of any kind in round 0
    assert run(m2, ["start", "timeout propose 0", "pv A 0 nil", "pv B 0 nil", "pv C 0 nil",
                    "timeout prevote 0"]) == ["wait propose 0", "wait prevote 0"]
    # round 1: Y without a POL gets nil, as before the crash
    assert run(m2, ["pc A 0 X", "pc B 0 nil", "pc C 0 nil", "timeout precommit 0",
                    "prop C 1 Y"]) == ["wait precommit 0", "wait propose 1", "prevote 1 nil"]


def test_restart_as_proposer_does_not_propose_again() -> None:
    m = machine("B")
    assert run(m, ["start", "ready X"]) == ["build 0", "wait propose 0", "propose 0 X pol=-1"]
    m2 = restarted(m, "B")
    assert run(m2, ["start", "ready Y"]) == ["wait propose 0"]


def test_restart_from_a_later_height_never_signs() -> None:
    later = SigningState(H + 1, 0, Step.PREVOTE, NIL)
    m = machine("A", restored=later)
    assert run(m, ["start", "prop B 0 X", "pv A 0 X", "pv B 0 X", "pv C 0 X"]) == [
        "wait propose 0", "wait prevote 0"]


# randomized: four honest validators over a shuffling, duplicating bus ------------------


def simulate(seed: int, n: int = 4, dup_p: float = 0.2, early_timeout_p: float = 0.05,
             hold_p: float = 0.0, async_steps: int = 400, max_steps: int = 20_000,
             ) -> tuple[dict[str, Commit], int]:
    """Run ``n`` machines until all decide, with messages delivered in random order and
    duplicated with probability ``dup_p``. Before ``async_steps`` steps (asynchrony), a
    timeout fires before pending messages with probability ``early_timeout_p`` and a
    message is held back until then with probability ``hold_p``; after it, timeouts fire
    only when no message is pending. Returns the decisions and the steps taken."""
    rng = random.Random(seed)
    names = ALL_NAMES[:n]
    validators = tuple(pub(x) for x in names)
    machines = {x: Machine(H, validators, pub(x)) for x in names}
    inflight: list[tuple[str, Event]] = []
    held: list[tuple[str, Event]] = []
    timers: list[tuple[str, Event]] = []
    decisions: dict[str, list[Commit]] = {}

    def send(to: str, event: Event) -> None:
        delay = steps < async_steps and rng.random() < hold_p
        (held if delay else inflight).append((to, event))

    def perform(me: str, actions: list[Action]) -> None:
        for a in actions:
            match a:
                case BuildBlock(_, round_):
                    block = blake2b256(f"{me} {round_}".encode())
                    inflight.append((me, BlockReady(block)))
                case BroadcastProposal(height, round_, block, pol):
                    p = sign_proposal(key(me), CHAIN_ID, height, round_, block, pol)
                    for x in names:
                        send(x, ProposalReceived(p, True))
                case BroadcastVote(vote_type, height, round_, block):
                    v = sign_vote(key(me), CHAIN_ID, vote_type, height, round_, block)
                    for x in names:
                        send(x, VoteReceived(v))
                case ScheduleTimeout(kind, height, round_, _):
                    timers.append((me, TimeoutFired(kind, height, round_)))
                case Commit():
                    decisions.setdefault(me, []).append(a)
                case ReportEvidence():
                    raise AssertionError(f"an honest validator equivocated: {a}")

    steps = 0
    for x in names:
        perform(x, machines[x].step(Start(0.0)))
    while len(decisions) < n and steps < max_steps and (inflight or timers or held):
        steps += 1
        if held and (steps >= async_steps or not (inflight or timers)):
            inflight += held  # synchrony from here on (or nothing else left to do)
            held.clear()
        early = steps < async_steps and timers and rng.random() < early_timeout_p
        if inflight and not early:
            i = rng.randrange(len(inflight))
            to, event = inflight[i] if rng.random() < dup_p else inflight.pop(i)
        else:
            to, event = timers.pop(rng.randrange(len(timers)))
        perform(to, machines[to].step(event))
    assert all(len(d) == 1 for d in decisions.values()), "a machine decided twice"
    return {x: d[0] for x, d in decisions.items()}, steps


def check_run(seed: int, n: int, **kw: float) -> None:
    decisions, steps = simulate(seed, n, **kw)
    assert len({d.block_hash for d in decisions.values()}) <= 1, "two different decisions"
    assert len(decisions) == n, f"only {sorted(decisions)} decided in {steps} steps"
    validators = tuple(pub(x) for x in ALL_NAMES[:n])
    for d in decisions.values():
        commit_certificate(d.precommits).verify(validators, CHAIN_ID)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), dup_p=st.sampled_from([0.0, 0.3]),
       early_timeout_p=st.sampled_from([0.0, 0.05, 0.3]), hold_p=st.sampled_from([0.0, 0.5]))
def test_random_interleavings_agree_and_decide(seed: int, dup_p: float, early_timeout_p: float,
                                               hold_p: float) -> None:
    check_run(seed, 4, dup_p=dup_p, early_timeout_p=early_timeout_p, hold_p=hold_p)


@pytest.mark.parametrize("seed", range(5))
def test_random_interleavings_seven_validators(seed: int) -> None:
    check_run(seed, 7, early_timeout_p=0.1, hold_p=0.3)
