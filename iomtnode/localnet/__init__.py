"""Localnets: N real ``iomtnode run`` processes on loopback or in network namespaces, with
chaos controls.

``layout`` makes the homes, ports, genesis and localnet.json; ``topology`` puts the nodes on
loopback or, with ``netns``, in a namespace each; ``net.Localnet`` runs and disrupts the
processes, through ``faults`` (admin refusals, or ``nft`` rules and the ``delayproxy``);
``observe`` watches them; ``scenarios`` is the chaos catalog, ``chaosrun`` runs one scenario
and checks the invariants I1-I5 (``invariants``, measured by ``measure``), ``suite`` runs a
TOML manifest of them; ``cli.localnet_app`` is the ``iomtnode localnet`` command.
"""

from .chaosrun import run_scenario
from .invariants import InvariantError
from .layout import LocalnetError, Manifest, NodeEntry, prepare
from .net import Localnet, LocalnetTimeout

__all__ = ["InvariantError", "Localnet", "LocalnetError", "LocalnetTimeout", "Manifest",
           "NodeEntry", "prepare", "run_scenario"]
