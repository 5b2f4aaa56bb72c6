"""The ``IOMTNODE_*`` environment variables iomtnode reads, in one place, and the ones in an
environment that it does not: a misspelt variable (``API_LISTN`` after the prefix) would
otherwise be ignored without a word, and the node would run with the default.

``iomtnode config validate`` fails on an unknown variable; ``iomtnode run`` logs a warning
for each and starts anyway, since another program may use the same prefix.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from .settings import ENV_PREFIX, KINDS, env_name

# IOMTNODE_* variables read by something other than the settings table, each with its reader
OTHER_VARIABLES: Mapping[str, str] = {
    "IOMTNODE_HOME": "the container image's entrypoint (deploy/docker/entrypoint.sh): the home",
    "IOMTNODE_KEY_FILE": "the container image's entrypoint: the key file init imports",
    "IOMTNODE_GENESIS_FILE": "the container image's entrypoint: the genesis.json init joins",
    "IOMTNODE_API_CA": "the client commands' --api-ca option (iomtnode/cli/common.py)",
    "IOMTNODE_FUZZ_EXAMPLES": "the fuzz tests' inputs per target (tests/fuzz/test_fuzz.py)",
}
# every IOMTNODE_* variable iomtnode reads: one per setting (IOMTNODE_<SETTING>), and the others
KNOWN_VARIABLES: frozenset[str] = frozenset({env_name(name) for name in KINDS}
                                            | set(OTHER_VARIABLES))
_SIMILAR = 0.6  # difflib's ratio a known name's suffix needs to be offered as the fix


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    """An ``IOMTNODE_*`` variable of the environment that iomtnode does not read."""

    name: str
    did_you_mean: str | None  # the known variable of the closest name, if one is close

    @property
    def message(self) -> str:
        hint = f"; did you mean {self.did_you_mean}?" if self.did_you_mean else ""
        return (f"{self.name} is not a variable iomtnode reads (in the environment): it "
                f"sets nothing{hint}")


def unknown_variables(env: Mapping[str, str]) -> tuple[UnknownVariable, ...]:
    """The ``IOMTNODE_*`` variables of ``env`` not in :data:`KNOWN_VARIABLES`, by name,
    each with the known variable its name is closest to (compared without the prefix,
    which every candidate shares)."""
    suffixes = [name.removeprefix(ENV_PREFIX) for name in sorted(KNOWN_VARIABLES)]
    found = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in KNOWN_VARIABLES:
            continue
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1,
                                          cutoff=_SIMILAR)
        found.append(UnknownVariable(name, ENV_PREFIX + close[0] if close else None))
    return tuple(found)
