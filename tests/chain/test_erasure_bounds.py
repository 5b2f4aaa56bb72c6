"""What an erasure costs and touches beyond its own stream: the key ranges it compacts stay
inside the namespaces it changed, a blob another stream's reading names is that stream's,
and a blob fetched while an erasure commits does not come back."""

from __future__ import annotations

import pytest

from iomtnode.chain.chain import Chain
from iomtnode.store.sidecars import COMPACT_PREFIX

from .streamkit import T0, erase, reading, seal, stream_chain


@pytest.fixture
def chain(tmp_path):
    chain = stream_chain(tmp_path / "data")
    yield chain
    chain.store.close()


class Recording:
    """A plyvel DB that records the ranges compacted."""

    def __init__(self, db) -> None:
        self._db = db
        self.compacted: list[tuple[bytes, bytes]] = []

    def compact_range(self, *, start: bytes, stop: bytes) -> None:
        self.compacted.append((start, stop))
        self._db.compact_range(start=start, stop=stop)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_an_erasure_compacts_only_the_namespaces_it_changed(chain: Chain):
    """Each compacted range, with the keys just below and above it, stays inside one key
    namespace: a range that starts at the empty key would rewrite every block stored."""
    seal(chain, [reading("d1", 1, T0 + 1)])
    recording = Recording(chain.store.sidecars._db)
    chain.store.sidecars._db = recording
    seal(chain, [erase()])
    chain.store.sidecars.wait_compacted()
    todo = chain.store.sidecars.get(COMPACT_PREFIX + chain.height.to_bytes(8, "big"))
    assert todo is None  # done
    assert recording.compacted
    outside = [(start, stop) for start, stop in recording.compacted
               if not start or start[:1] != stop[:1]]
    assert outside == []
