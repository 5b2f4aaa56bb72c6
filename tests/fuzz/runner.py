"""Running a fuzz target a given number of times, counting executions and crashes.

Two ways, both Hypothesis: :func:`run_engine` is Hypothesis's own search (it shrinks a
failing input to a small one: the short run of the test suite), and :func:`run_buffers`
feeds the same strategies seeded random bytes through ``fuzz_one_input`` (no shrinking and
no example database, several times faster: the long run). A crash is any exception but the
target's documented errors; each distinct one (type and where it was raised) is reported
once with its input.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from .targets import Target

BUFFER_BYTES = 4096  # random bytes Hypothesis draws one input from (long run)


@dataclass
class Outcome:
    name: str
    executions: int = 0
    seconds: float = 0.0
    crashes: dict[tuple[str, str], str] = field(default_factory=dict)  # where -> report

    def line(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0.0
        result = "ok" if not self.crashes else f"{len(self.crashes)} CRASH(ES)"
        return (f"{self.name:28} {self.executions:>9} executions {self.seconds:8.1f} s "
                f"{rate:8.0f}/s  {result}")


def _checked(target: Target, outcome: Outcome, *, raise_crash: bool) -> Any:
    def run(value: Any) -> None:
        outcome.executions += 1
        try:
            target.run(value)
        except target.errors:
            pass
        except Exception as exc:
            if raise_crash:
                raise
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = (type(exc).__name__, f"{frame.filename}:{frame.lineno}")
            outcome.crashes.setdefault(
                where, f"{target.name}: input {value!r:.400}\n{traceback.format_exc()}")
    return run


def run_engine(target: Target, examples: int) -> Outcome:
    """Hypothesis's search for ``examples`` inputs; raises the (shrunk) crash."""
    outcome = Outcome(target.name)
    check = _checked(target, outcome, raise_crash=True)

    @settings(max_examples=examples, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def search(value: Any) -> None:
        check(value)

    start = time.perf_counter()
    search()
    outcome.seconds = time.perf_counter() - start
    return outcome


def run_buffers(target: Target, executions: int, seed: int) -> Outcome:
    """``executions`` inputs drawn from seeded random bytes; crashes are collected."""
    outcome = Outcome(target.name)
    check = _checked(target, outcome, raise_crash=False)

    @settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def one(value: Any) -> None:
        check(value)

    rng = random.Random(f"{seed}:{target.name}")
    fuzz = one.hypothesis.fuzz_one_input
    start = time.perf_counter()
    while outcome.executions < executions:
        fuzz(rng.randbytes(BUFFER_BYTES))
    outcome.seconds = time.perf_counter() - start
    return outcome
