"""Localnets: N real ``iomtnode run`` processes on loopback, with chaos controls.

``layout`` makes the homes, ports, genesis and localnet.json; ``net.Localnet`` runs and
disrupts the processes; ``chaos`` holds the named scenarios; ``cli.localnet_app`` is the
``iomtnode localnet`` command.
"""

from .invariants import InvariantError
from .layout import LocalnetError, Manifest, NodeEntry, prepare
from .net import Localnet, LocalnetTimeout

__all__ = ["InvariantError", "Localnet", "LocalnetError", "LocalnetTimeout", "Manifest",
           "NodeEntry", "prepare"]
