"""Every command that prints a result takes --json (one JSON object on stdout); the ones that
do not are the services and the commands that print JSON lines as they go."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from iomtnode import __version__
from iomtnode.cli import app

STREAMS_AND_SERVICES = {"run", "dev", "blocks follow", "records fetch"}


def leaves(command, path: str = ""):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from leaves(sub, f"{path} {name}".strip())
    else:
        yield path, {p.name for p in command.params}


def test_every_command_that_prints_a_result_takes_json():
    found = dict(leaves(typer.main.get_command(app)))
    assert set(found) >= STREAMS_AND_SERVICES
    lacking = sorted(path for path, params in found.items()
                     if "as_json" not in params and path not in STREAMS_AND_SERVICES)
    assert lacking == []


def test_version_as_json():
    result = CliRunner().invoke(app, ["version", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"version": __version__}
    plain = CliRunner().invoke(app, ["version"])
    assert plain.stdout.strip() == __version__
