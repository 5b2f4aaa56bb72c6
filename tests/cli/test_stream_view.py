"""What the patient's commands say of a stream the ledger does not know yet."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import typer

from iomtnode.cli.streams import NOT_FOUND, stream_view
from iomtnode.client import ApiError


class NoStream:
    async def call(self, method: str, **params: Any) -> Any:
        raise ApiError(NOT_FOUND, "no such stream")


def test_an_unknown_stream_says_an_admission_may_need_more_approvals(capsys):
    # on a network whose genesis asks two approvals, `patient epoch` after the first desk's
    # admit said "an authority admits a device to it first": the patient had just seen it
    # done; the admission is not in force until enough authorities approved it
    with pytest.raises(typer.Exit) as stopped:
        trio.run(stream_view, NoStream(), b"\x01" * 32)
    assert stopped.value.exit_code == 1
    err = capsys.readouterr().err
    assert "the ledger does not know stream 0101010101010101 yet" in err
    assert "admission_threshold" in err and "--profile-salt" in err
