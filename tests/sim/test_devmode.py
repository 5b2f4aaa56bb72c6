"""``iomtnode dev``: a throwaway chain with simulated devices runs, draws its progress line
(height, committed, mempool read from the running node's services) and commits readings."""

from __future__ import annotations

import pytest
import trio

from iomtnode.devmode import _dev

pytestmark = pytest.mark.timeout(60)


async def test_the_dev_chain_commits_its_devices_readings_and_shows_progress(capsys):
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            await nursery.start(_dev, 3, 30.0, 2.5, "127.0.0.1:0")
    out, err = capsys.readouterr()
    assert "dev chain iomt-dev at ws://127.0.0.1:" in out
    [summary] = [line for line in out.splitlines() if line.startswith("committed ")]
    committed, submitted = (int(w) for w in summary.split()[1:4:2])
    assert 0 < committed <= submitted
    assert "| mempool " in err  # the progress line was drawn
