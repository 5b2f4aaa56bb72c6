"""Rules of the consensus machine that only a scenario of their own can see broken: the
lock of Algorithm 1 line 28, the size of a proof of lock, and the first proposal of a
round standing against a second.

Scripts and expected actions as in :mod:`tests.consensus.test_machine` (height 5; with
A B C D the proposers are: round 0 B, 1 C, 2 D, 3 A; with A to G: round 0 F, 1 G, 2 A,
3 B). Each case names the rule whose removal changes its actions.
"""

from __future__ import annotations

import pytest

from iomtnode.core.vote import NIL

from .test_machine import BLOCKS, LOCK_X, LOCK_X_OUT, Case, machine, run

# A prevotes nil in round 0 and sees it end without a decision; in round 1 it locks on X
NIL_ROUND_0 = ["start", "timeout propose 0", "pc B 0 nil", "pc C 0 nil", "pc D 0 nil",
               "timeout precommit 0"]
NIL_ROUND_0_OUT = ["wait propose 0", "prevote 0 nil", "wait precommit 0", "wait propose 1"]
LOCK_X_1 = [*NIL_ROUND_0, "prop C 1 X", "pv A 1 X", "pv B 1 X", "pv C 1 X",
            "pc A 1 X", "pc B 1 nil", "pc C 1 nil", "timeout precommit 1"]
LOCK_X_1_OUT = [*NIL_ROUND_0_OUT, "prevote 1 X", "wait prevote 1", "precommit 1 X",
                "wait precommit 1", "wait propose 2"]
# seven validators: A locks on X in round 0 (F proposes; quorum 5, f + 1 = 3)
LOCK_X_7 = ["start", "prop F 0 X", "pv A 0 X", "pv B 0 X", "pv C 0 X", "pv D 0 X",
            "pv E 0 X"]
LOCK_X_7_OUT = ["wait propose 0", "prevote 0 X", "wait prevote 0", "precommit 0 X"]

CASES = [
    # line 28: locked on X in round 1, D proposes Y with a round-0 polka for Y (it came
    # late). The polka is older than the lock (locked round 1 > pol round 0): nil.
    # [rule: lockedRound <= vr or lockedValue = v]
    Case("lock-newer-than-pol", "A",
         [*LOCK_X_1, "pv B 0 Y", "pv C 0 Y", "pv D 0 Y", "prop D 2 Y pol=0"],
         [*LOCK_X_1_OUT, "prevote 2 nil"]),
    # ... the same with X re-proposed on a round-0 polka for X: the lock's own value
    Case("lock-newer-than-pol-same-value", "A",
         [*LOCK_X_1, "pv B 0 X", "pv C 0 X", "pv D 0 X", "prop D 2 X pol=0"],
         [*LOCK_X_1_OUT, "prevote 2 X"]),
    # locked on X in round 0, D proposes Y in round 2 with a proof of lock from round 1
    # of 2f = 2 prevotes (B, C; they also make A skip to round 1), one short: A waits
    # for the rest, then prevotes nil. [rule: 2f+1 prevotes in vr before line 28]
    Case("pol-one-short", "A",
         [*LOCK_X, "prop D 2 Y pol=1", "pv B 1 Y", "pv C 1 Y", "pc B 2 nil", "pc C 2 nil",
          "timeout propose 2"],
         [*LOCK_X_OUT, "wait propose 1", "wait propose 2", "prevote 2 nil"]),
    # ... and with the 2f+1-th (D's) it unlocks
    Case("pol-complete", "A",
         [*LOCK_X, "prop D 2 Y pol=1", "pv B 1 Y", "pv C 1 Y", "pv D 1 Y", "pc B 2 nil",
          "pc C 2 nil"],
         [*LOCK_X_OUT, "wait propose 1", "wait propose 2", "prevote 2 Y"]),
    # seven validators: 4 = 2f prevotes for Y in round 1 are one short of the quorum 5
    Case("pol-one-short-seven", "A",
         [*LOCK_X_7, "prop B 3 Y pol=1", "pv B 1 Y", "pv C 1 Y", "pv D 1 Y", "pv E 1 Y",
          "pc B 3 nil", "pc C 3 nil", "pc D 3 nil", "timeout propose 3"],
         [*LOCK_X_7_OUT, "wait propose 1", "wait propose 3", "prevote 3 nil"],
         names="ABCDEFG"),
    # C proposes X and then Y for round 1 while A is in round 0: A skips to round 1 and
    # prevotes the first. [rule: the first proposal of a round stands]
    Case("first-proposal-stands-ahead", "A",
         ["start", "prop C 1 X", "prop C 1 Y", "pv B 1 nil", "pv D 1 nil"],
         ["wait propose 0", "wait propose 1", "prevote 1 X"]),
    # B proposes X, A prevotes X; B's second proposal, Y, gets a polka: A does not lock
    # on Y (it is not the round's proposal), and precommits nothing
    Case("first-proposal-stands-polka", "A",
         ["start", "prop B 0 X", "prop B 0 Y", "pv B 0 Y", "pv C 0 Y", "pv D 0 Y"],
         ["wait propose 0", "prevote 0 X", "wait prevote 0"]),
    # ... also when the first one's block was invalid (a nil prevote) and the second's valid
    Case("first-proposal-stands-invalid", "A",
         ["start", "prop B 0 X invalid", "prop B 0 Y", "pv B 0 Y", "pv C 0 Y", "pv D 0 Y"],
         ["wait propose 0", "prevote 0 nil", "wait prevote 0"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_scenario(case: Case) -> None:
    assert run(machine(case.me, case.names), case.script) == case.expect


def test_a_lock_stays_where_a_second_proposal_had_its_polka() -> None:
    m = machine("A")
    run(m, ["start", "prop B 0 X", "prop B 0 Y", "pv B 0 Y", "pv C 0 Y", "pv D 0 Y"])
    assert (m.locked_round, m.locked_value, m.valid_value) == (-1, NIL, NIL)
    m = machine("A")
    run(m, LOCK_X_1)
    assert (m.locked_round, m.locked_value) == (1, BLOCKS["X"])
