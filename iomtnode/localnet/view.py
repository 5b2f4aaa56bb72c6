"""What the parts that watch a localnet or break it (:mod:`.observe`, :mod:`.faults`) ask of
the running :class:`~iomtnode.localnet.net.Localnet`: its nodes, their states and their APIs.

A Protocol, so that those modules need not import the Localnet, which imports them.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from .layout import Manifest, NodeEntry

NodeState = Literal["up", "paused", "down"]


class LocalnetView(Protocol):
    manifest: Manifest

    @property
    def names(self) -> list[str]: ...

    @property
    def env(self) -> dict[str, str]: ...

    def node(self, name: str) -> NodeEntry: ...

    def state(self, name: str) -> NodeState: ...

    def refresh_from_disk(self) -> None: ...

    async def call(self, name: str, method: str, *, timeout_s: float = ...,
                   **params: Any) -> Any: ...

    async def admin(self, name: str, method: str, **params: Any) -> Any: ...

    async def status(self, name: str, *, timeout_s: float = ...) -> dict[str, Any]: ...
