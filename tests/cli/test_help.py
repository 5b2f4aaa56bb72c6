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


def test_no_help_paragraph_breaks_a_sentence_mid_line():
    """Rich help prints a docstring's line breaks as they are: at 80 columns sentences broke
    mid-line (`authority resume-signing --help`: "no" alone at a line's end, "other" on the
    next), so each paragraph must be one line for the terminal to wrap."""
    broken = []
    for path, command in leaves(typer.main.get_command(app)):
        broken += [path for paragraph in (command.help or "").split("\n\n")
                   if "\n" in paragraph and not paragraph.startswith("\b")]
    assert broken == []
