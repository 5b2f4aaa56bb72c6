"""The consensus driver's settings and figures, and the clock that stamps the blocks it builds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .machine import Params


def wall_clock_ms() -> int:
    """Block times: the wall clock, in ms (tests inject their own)."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class DriverConfig:
    block_interval_s: float  # the least time from one block to the next height's start
    empty_block_interval_s: float  # with nothing pending, start (an empty block) after this
    max_block_txs: int
    params: Params = field(default_factory=Params)  # round timeouts
    resend_interval_s: float = 2.0  # own messages of an undecided height are sent again
    # without persisted signing state, observe this long before signing (None: twice the
    # longest round-0 timeout, at least resend_interval_s)
    fresh_grace_s: float | None = None
    # write the write-ahead record on the trio thread, not in a worker thread (for a virtual
    # clock, which jumps ahead while a worker runs)
    inline_io: bool = False

    def fresh_grace(self) -> float:
        if self.fresh_grace_s is not None:
            return self.fresh_grace_s
        p = self.params
        longest = max(p.timeout_propose_s, p.timeout_prevote_s, p.timeout_precommit_s)
        return max(2 * longest, self.resend_interval_s)


@dataclass(frozen=True, slots=True)
class ConsensusStats:
    """The consensus driver's figures at one moment (``status``, metrics)."""

    deciding: tuple[int, int] | None  # (height, round) of the machine; None: only following
    evidence_seen: tuple[dict[str, Any], ...]  # equivocations seen here, oldest first
    dropped_messages: int  # peer messages dropped because the queue was full
    pending_blocks: int  # proposed blocks waiting for transactions from peers
