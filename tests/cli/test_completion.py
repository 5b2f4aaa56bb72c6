"""Shell completion: the command line prints a completion script for the shell asked for,
and the script's completions come from the app itself."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from iomtnode.cli import app


@pytest.mark.parametrize(("shell", "mark"), [
    ("bash", "complete -o default -F _iomtnode_completion iomtnode"),
    ("zsh", "#compdef iomtnode"),
    ("fish", "complete --command iomtnode"),
])
def test_show_completion_prints_the_script_of_the_shell_given(
        monkeypatch: pytest.MonkeyPatch, shell: str, mark: str) -> None:
    # typer detects the running shell; this variable makes it take the shell named instead
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = CliRunner().invoke(app, ["--show-completion", shell], prog_name="iomtnode")
    assert result.exit_code == 0, result.output
    assert mark in result.output
    assert "_IOMTNODE_COMPLETE" in result.output


def test_install_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"], prog_name="iomtnode")
    assert "--install-completion" in result.output
    assert "--show-completion" in result.output


def test_the_script_completes_the_apps_commands() -> None:
    env = {"_IOMTNODE_COMPLETE": "complete_bash", "COMP_WORDS": "iomtnode loc", "COMP_CWORD": "1"}
    result = CliRunner().invoke(app, [], prog_name="iomtnode", env=env)
    assert result.output.split() == ["localnet"]
