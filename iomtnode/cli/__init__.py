"""The ``iomtnode`` command line (typer): one app, its commands by area in this package
(:mod:`.node`, :mod:`.query`, :mod:`.blocks`, :mod:`.device`, :mod:`.authority`,
:mod:`.load`; the patient's side in :mod:`.patient`, :mod:`.records`, :mod:`.devicesend`,
:mod:`.audit`), the localnet tooling mounted as ``iomtnode localnet``.

Results go to stdout (JSON with ``--json``), logs to stderr, so scripts can pipe.
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated

import typer

from .. import log
from ..localnet.cli import localnet_app
from . import audit, load, node, query
from .authority import authority_app
from .blocks import blocks_app
from .common import fail
from .config import config_app
from .device import device_app
from .devicesend import device_send
from .genesis import genesis_app
from .patient import patient_app
from .records import records_app

app = typer.Typer(
    help="A permissioned proof-of-authority blockchain node for the Internet of Medical Things.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (the shell it runs in)
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    log_level: Annotated[str | None, typer.Option(
        help="debug, info, warning or error (default: info; for run, the log_level setting).",
        show_default=False)] = None,
    log_json: Annotated[bool | None, typer.Option(
        "--log-json/--log-console", help="Log format (default: console on a TTY, else JSON).",
        show_default=False)] = None,
) -> None:
    """iomtnode: run, inspect and load-test IoMT blockchain nodes."""
    try:
        log.configure(log_level or "info", json=log_json)
    except ValueError as exc:
        fail(str(exc))


for command in (node.version, node.init, node.run, node.dev, query.status, load.simulate,
                query.block, query.receipt, query.verify):
    app.command()(command)
app.command(help=load.BENCH_HELP)(load.bench)
app.command()(audit.audit)
device_app.command("send")(device_send)
app.add_typer(device_app, name="device")
app.add_typer(localnet_app, name="localnet")
app.add_typer(authority_app, name="authority")
app.add_typer(blocks_app, name="blocks")
app.add_typer(patient_app, name="patient")
app.add_typer(records_app, name="records")
app.add_typer(config_app, name="config")
app.add_typer(genesis_app, name="genesis")


def reflow_help(typer_app: typer.Typer) -> None:
    """Make each paragraph of every command's help one line, for the terminal to wrap: rich
    help keeps a docstring's line breaks, which at 80 columns break sentences mid-line."""
    for info in typer_app.registered_commands:
        text = info.help if info.help is not None else inspect.getdoc(info.callback)
        info.help = _reflowed(text or "")
    for group in typer_app.registered_groups:
        reflow_help(group.typer_instance)


def _reflowed(text: str) -> str:
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n"))
                       for p in inspect.cleandoc(text).split("\n\n"))


reflow_help(app)


def main() -> None:
    app(prog_name="iomtnode")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
