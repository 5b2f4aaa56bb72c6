"""What every command of the ``iomtnode`` command line shares: options, output, errors.

Results go to stdout (JSON with ``--json``), logs to stderr, so scripts can pipe.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Annotated, Any, NoReturn

import trio
import typer
from trio_websocket import ConnectionRejected
from trio_websocket import HandshakeError as WsHandshakeError

from ..audit.log import AuditLogError
from ..chain.chain import WrongChainError
from ..client import ApiError, ClientSetupError, open_client
from ..config import ConfigError
from ..core.crypto import SigningKey
from ..core.genesis import Genesis, GenesisError
from ..home import Home, HomeError
from ..p2p.transport import ListenError
from ..service import TERMINATED_EXIT, Terminated, single_exception
from ..store import StoreError

DEFAULT_API = "ws://127.0.0.1:7545/api/v1"
HomeOpt = Annotated[Path, typer.Option("--home", help="The node's home directory.")]
ApiOpt = Annotated[str, typer.Option(
    "--api", help="The node's API: HOST:PORT, ws://HOST:PORT or wss://HOST:PORT (TLS).")]


def _exported_ca_for_tls_only(ctx: typer.Context, param: typer.CallbackParam,
                              value: Path | None) -> Path | None:
    """A CA file taken from ``IOMTNODE_API_CA`` applies to wss:// APIs only: exported for
    the TLS nodes, it must not break the commands aimed at a plain ws:// one (given on the
    command line with a ws:// API it is still refused, as a mistake)."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    if value is None or getattr(source, "name", None) != "ENVIRONMENT":
        return value
    api = ctx.params.get("api")  # parsed first: declared before, or given on the line
    # audit's --api is a sequence (repeated), or None for the default
    urls = [api] if isinstance(api, str) else list(api or ()) or [DEFAULT_API]
    if not any(api_url(url).startswith("wss://") for url in urls):
        return None
    return value


def ca_for(url: str, urls: list[str], ca: Path | None) -> Path | None:
    """The CA file for ``url`` among several APIs: a CA is for wss:// URLs, so with some
    of ``urls`` wss:// it goes to those only (with none it is kept, and refused as a
    mistake for a ws:// one)."""
    if any(u.startswith("wss://") for u in urls) and not url.startswith("wss://"):
        return None
    return ca


CaOpt = Annotated[Path | None, typer.Option(
    "--api-ca", envvar="IOMTNODE_API_CA", callback=_exported_ca_for_tls_only,
    help="For a wss:// API: a PEM file of the node's certificate (or of the CA that signed "
         "it) to trust besides the system's roots (from IOMTNODE_API_CA: for wss:// APIs "
         "only).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def global_option(ctx: typer.Context, name: str) -> Any:
    """An option of the main command, given before the command (``iomtnode --log-level
    debug run``): None when not given, or when the command runs in an app without them."""
    return ctx.find_root().params.get(name)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def emit(result: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        typer.echo(text if text is not None else json.dumps(result, indent=2, sort_keys=True))


def api_url(value: str) -> str:
    """Accept ``host:port`` or a full ws:// or wss:// URL; default the path to /api/v1."""
    if "://" not in value:
        value = f"ws://{value}"
    scheme, rest = value.split("://", 1)
    if "/" not in rest:
        value = f"{scheme}://{rest}/api/v1"
    return value


def run_async(fn: Any, *args: Any) -> Any:
    """Run a coroutine function under trio, turning expected failures into clear errors."""
    try:
        return trio.run(fn, *args)
    except Exception as raised:  # re-raised below unless it is an expected one
        exc = single_exception(raised)
        if isinstance(exc, Terminated):
            fail(str(exc), TERMINATED_EXIT)
        if isinstance(exc, ApiError):
            fail(f"the node refused: {exc.message} (code {exc.code})", 1)
        if isinstance(exc, StoreError | WrongChainError | ConfigError):
            fail(str(exc))
        if isinstance(exc, ConnectionRejected):  # an HTTP answer: its status and text
            text = (exc.body or b"").decode("utf-8", "replace").strip()
            fail(f"the node refused the connection: HTTP {exc.status_code}"
                 + (f": {text}" if text else ""), 1)
        if isinstance(exc, WsHandshakeError):
            fail(f"the node refused the connection: {exc}", 1)
        if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
            fail(f"TLS with the node failed: {exc.__cause__} (a self-signed certificate: pass "
                 "--api-ca with it)", 1)
        if isinstance(exc, ClientSetupError):
            fail(str(exc))
        if isinstance(exc, ListenError):
            fail(exc.strerror, 1)
        if isinstance(exc, AuditLogError):  # damaged, or held by another process
            fail(f"the audit log cannot be opened: {exc}", 1)
        if isinstance(exc, OSError | ConnectionError):
            fail(f"cannot reach the node: {exc}", 1)
        if isinstance(exc, trio.TooSlowError):
            fail("the node did not answer in time (an API with TLS answers only wss:// URLs)", 1)
        raise


async def call(url: str, method: str, *, ca: Path | None = None,
               signer: SigningKey | None = None, **params: Any) -> Any:
    """One JSON-RPC call on a fresh connection to the node at ``url`` (``ca``: see
    :data:`CaOpt`), as ``signer`` if given (the connection proves its key first)."""
    async with open_client(url, ca=ca) as client:
        if signer is not None:
            await client.authenticate(signer)
        return await client.call(method, **params)


def authority_key(home: Path) -> tuple[SigningKey, Genesis]:
    """The key and genesis of the authority whose home is ``home`` (or a clear error)."""
    try:
        h = Home(home)
        return h.load_key(), h.load_genesis()
    except (HomeError, GenesisError) as exc:
        fail(str(exc))


def hex_bytes(name: str, value: str, what: str = "") -> bytes:
    """``value``, hex digits, as bytes (or a clear error naming ``name``; ``what`` says
    where a right value comes from)."""
    try:
        return bytes.fromhex(value)
    except ValueError:
        fail(f"{name} must be hex{what}")


def hex32(name: str, value: str) -> bytes:
    """``value``, 64 hex digits, as 32 bytes (or a clear error naming ``name``)."""
    raw = hex_bytes(name, value)
    if len(raw) != 32:
        fail(f"{name} must be 32 bytes (64 hex digits)")
    return raw
