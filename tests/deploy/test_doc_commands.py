"""Every ``iomtnode`` command an operator is told to type (the shell blocks of the README, of
deploy/README.md and of every page of docs/, the commands in the comments of
deploy/k8s/keys.example.yaml) is one the command line accepts: its subcommand exists, each
option is one it takes and every required option is given. Click parses each, as
``iomtnode`` would, without running it."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from iomtnode.cli import app

from .tools import DEPLOY, ROOT

try:  # typer 0.26 and later parse with a click of their own
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError

PAGES = (DEPLOY / "README.md", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
COMMENTED = (DEPLOY / "k8s" / "keys.example.yaml",)
SHELL_FENCES = ("sh", "shell", "bash", "")  # a fenced block in shell, or plain
# how the pages invoke the command line: on PATH or a venv's, maybe after variables for it,
# maybe under sudo
# maybe after a prompt (`$ `, `desk$ `: a page showing a session, its output beside it)
_PROGRAM = re.compile(
    r"^(?:\w*\$ )?(?:[A-Z_]+=\S+ )*(?:sudo (?:-u \S+ )?)?(?:\S*/)?iomtnode(?=\s)")
# what ends a command on a line: a list or pipe operator, a redirection, running it in the
# background
_SEPARATOR = re.compile(r"\s*(?:&&|\|\||;|\|)\s*")
_REDIRECTION = re.compile(r"\s*(?:[0-9]?>>?\s*\S+|&)\s*$")


def _blocks(text: str) -> list[str]:
    """The shell (and plain) fenced blocks of markdown ``text``."""
    blocks, current, language = [], [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if language is None:
                language, current = line.strip().removeprefix("```").strip(), []
            else:
                if language in SHELL_FENCES:
                    blocks.append("\n".join(current))
                language = None
        elif language is not None:
            current.append(line)
    return blocks


def _lines(text: str) -> list[str]:
    """The logical lines of shell ``text``: continuations joined, comments dropped."""
    lines = (re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _commands(lines: list[str]) -> list[list[str]]:
    """The argument lists of the lines of ``lines`` that invoke ``iomtnode``."""
    found = []
    for part in (p for line in lines for p in _SEPARATOR.split(line)):
        if (program := _PROGRAM.match(part)) is not None:
            found.append(shlex.split(_REDIRECTION.sub("", part[program.end():])))
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for block in _blocks(page.read_text()):
            found += [(page.name, args) for args in _commands(_lines(block))]
    for path in COMMENTED:
        comments = "\n".join(line.removeprefix("#").strip() for line in path.read_text()
                             .splitlines() if line.startswith("#"))
        found += [(path.name, args) for args in _commands(_lines(comments))]
    return found


def _parse(args: list[str]) -> None:
    """Parse ``args`` as ``iomtnode ARGS`` would, down to the leaf command; raise
    ``UsageError`` if the command line refuses them."""
    command, context, rest = typer.main.get_command(app), None, list(args)
    while hasattr(command, "get_command"):  # a group: its first argument names a command
        context = command.make_context(command.name or "iomtnode", [], parent=context,
                                       resilient_parsing=True)
        if not rest or (sub := command.get_command(context, rest[0])) is None:
            raise UsageError(f"no command {rest[:1]} in {command.name or 'iomtnode'}")
        command, rest = sub, rest[1:]
    command.make_context(command.name, rest, parent=context)


COMMANDS = documented_commands()


def test_the_pages_name_the_commands_the_ceremony_needs():
    """The extraction finds the commands (else the test below would check nothing)."""
    verbs = {" ".join(args[:2]) for _, args in COMMANDS}
    assert {"genesis card", "genesis new", "genesis verify", "status --ready"} <= verbs
    assert {page for page, _ in COMMANDS} >= {"README.md", "network.md", "keys.example.yaml",
                                              "chaos.md", "patients.md", "api.md"}
    readme = {" ".join(args[:2]) for page, args in COMMANDS if page == "README.md"}
    assert {"dev", "localnet up", "receipt READING_ID", "patient keygen"} <= readme


@pytest.mark.parametrize(("page", "args"), COMMANDS,
                         ids=[f"{page}:{' '.join(args[:2])}" for page, args in COMMANDS])
def test_every_documented_command_is_accepted(page: str, args: list[str]):
    try:
        _parse(args)
    except UsageError as exc:
        pytest.fail(f"{page}: `iomtnode {shlex.join(args)}` is refused: {exc.format_message()}")


def test_a_command_missing_a_required_option_is_refused():
    with pytest.raises(UsageError) as refused:
        _parse(["genesis", "card", "--home", "h", "--address", "a:1"])
    assert "--chain-id" in refused.value.format_message()
    with pytest.raises(UsageError):
        _parse(["genesis", "cards", "--home", "h"])
    _parse(["genesis", "card", "--home", "h", "--address", "a:1", "--chain-id", "c"])


def test_a_node_joining_with_a_given_genesis_is_told_whom_to_dial():
    """genesis.json names no address: a systemd node made by `init --genesis` (no ceremony,
    so no `verify --install` to set its bootnodes) finds the network only through the
    bootnodes its steps give it, or it is never ready."""
    from iomtnode.core.genesis import Genesis

    assert not {"address", "addresses", "bootnodes"} & set(
        Genesis("c", 1, (bytes(32),), 1).to_json())
    text = (DEPLOY / "README.md").read_text()
    systemd = text[text.index("## systemd"):text.index("## Docker")]
    assert "--genesis /etc/iomtnode/genesis.json" in systemd  # the join path is there
    assert "Environment=IOMTNODE_BOOTNODES=" in systemd


def test_every_documented_install_of_a_genesis_checks_its_hash():
    """An authority installs the genesis only once its hash is the one its maker told it out
    of band (docs/network.md): deploy/README.md's systemd steps left `--expect-hash` out, so an
    operator following them installed a genesis nobody compared."""
    installs = [(page, args) for page, args in COMMANDS
                if args[:2] == ["genesis", "verify"] and "--install" in args]
    assert {page for page, _ in installs} >= {"README.md", "network.md"}  # deploy's README
    for page, args in installs:
        assert "--expect-hash" in args, f"{page}: iomtnode {shlex.join(args)}"
