"""`iomtnode ... --help` explains every command and every option it shows."""

from __future__ import annotations

from collections.abc import Iterator

import typer

from iomtnode.cli import app


def leaves(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, object]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(path), command
        return
    for name, sub in subcommands.items():
        yield from leaves(sub, (*path, name))


def test_every_command_and_every_option_it_shows_has_a_help_text():
    missing = []
    for path, command in leaves(typer.main.get_command(app)):
        if not command.help:
            missing.append(path)
        missing += [f"{path} {param.opts[0]}" for param in command.params
                    if param.param_type_name == "option" and not param.hidden
                    and not param.help]
    assert missing == []
