"""``iomtnode authority vote`` without --add or --remove names both choices."""

from __future__ import annotations

from typer.testing import CliRunner

from iomtnode.cli import app


def test_a_vote_without_add_or_remove_names_both(tmp_path):
    result = CliRunner().invoke(app, ["authority", "vote", "ab" * 32, "--home", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: give --add or --remove\n"
