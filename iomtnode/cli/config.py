"""``iomtnode config show | validate``: a node's effective settings, each with the source it
came from, and every problem with them at once.

Both read what ``iomtnode run`` would: the home's config.toml, the ``IOMTNODE_*`` environment
variables of this shell and the same ``--api``/``--p2p`` flags, so ``config show --api X``
shows what ``run --api X`` would run with. No setting is a secret: the admin token and the
keys are files of the home, never read here (but the API's TLS certificate and key, which are
loaded as ``run`` loads them to check them, and never shown).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any

import typer

from ..api.tls import ApiTlsError, load_api_tls
from ..config import Issue, Resolved, resolve
from ..config.settings import FLAGS
from ..home import Home
from .common import HomeOpt, JsonOpt, emit, fail, global_option

config_app = typer.Typer(no_args_is_help=True,
                         help="Show and check a node's settings (docs/configuration.md).")

NOT_A_HOME = 2  # exit code, as run's for a directory that is no home

ListenApiOpt = Annotated[str | None, typer.Option(
    FLAGS["api_listen"], help="API listen HOST:PORT, as `run` takes it.")]
ListenP2pOpt = Annotated[str | None, typer.Option(
    FLAGS["p2p_listen"], help="P2P listen HOST:PORT, as `run` takes it.")]


def _resolve(ctx: typer.Context, home: Home, api: str | None, p2p: str | None,
             as_json: bool) -> Resolved:
    """The settings ``run`` would resolve. A directory without config.toml is no home: one
    error, with ``run``'s words and exit code (2), and no settings to list."""
    if not home.config_path.exists():
        message = (f"{home.path} is a file, not an iomtnode home (a directory)"
                   if home.path.exists() and not home.path.is_dir() else
                   f"{home.path} is not an iomtnode home ({home.config_path.name} missing); "
                   f"run: iomtnode init --home {home.path}")
        if as_json:
            typer.echo(json.dumps({"ok": False, "errors": [{"key": "home", "message": message}]},
                                  sort_keys=True))
            raise typer.Exit(NOT_A_HOME)
        fail(message, NOT_A_HOME)
    resolved = resolve(home.config_path, {"api_listen": api, "p2p_listen": p2p,
                                          "log_level": global_option(ctx, "log_level")})
    return _with_files(home, resolved)


def _with_files(home: Home, resolved: Resolved) -> Resolved:
    """``resolved`` with the problem of the files its settings name, loaded as ``run`` loads
    them: the API's TLS certificate and key (missing, not PEM, not matching)."""
    config = resolved.config
    if config is None or not config.api_tls_cert:
        return resolved
    try:
        load_api_tls(home.path / config.api_tls_cert, home.path / config.api_tls_key)
    except ApiTlsError as exc:
        key = "api_tls_key" if str(exc).startswith("api_tls_key") else "api_tls_cert"
        return replace(resolved, issues=(Issue(key, str(exc)),), config=None)
    return resolved


def _format(resolved: Resolved) -> str:
    if resolved.version_stated:
        return f"format {resolved.version}"
    return (f"format {resolved.version} (the file states no version: written by an older "
            f"release, read as format {resolved.version})")


def _shown(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _errors(resolved: Resolved) -> list[dict[str, str]]:
    """Every issue, then every IOMTNODE_* variable that sets nothing (keyed by its name)."""
    return ([{"key": issue.key, "message": issue.message} for issue in resolved.issues]
            + [{"key": v.name, "message": v.message} for v in resolved.unknown_variables])


def show(ctx: typer.Context, home: HomeOpt, api: ListenApiOpt = None, p2p: ListenP2pOpt = None,
         as_json: JsonOpt = False) -> None:
    """Print every setting's effective value and its source: file, env, flag or default.

    Exits 1, listing every problem, when the settings would not start a node (with --json,
    still one object: ok false and the errors); 2, as run does, when the directory is
    no home. An IOMTNODE_* variable that sets nothing is warned of on stderr (and listed with
    --json).
    """
    resolved = _resolve(ctx, Home(home), api, p2p, as_json)
    for variable in resolved.unknown_variables:
        typer.echo(f"warning: {variable.message}", err=True)
    unknown = [{"name": v.name, "did_you_mean": v.did_you_mean}
               for v in resolved.unknown_variables]
    if resolved.issues:
        if as_json:
            errors = [{"key": issue.key, "message": issue.message} for issue in resolved.issues]
            emit({"home": str(home), "config": str(resolved.path), "ok": False,
                  "errors": errors, "unknown_variables": unknown}, as_json)
            raise typer.Exit(1)
        for issue in resolved.issues:
            typer.echo(f"error: {issue.message}", err=True)
        typer.echo("error: fix these settings (iomtnode config validate lists them too)",
                   err=True)
        raise typer.Exit(1)
    settings = {name: {"value": list(s.value) if isinstance(s.value, tuple) else s.value,
                       "source": s.source} for name, s in resolved.settings.items()}
    result = {"home": str(home), "config": str(resolved.path), "ok": True, "errors": [],
              "version": {"value": resolved.version,
                          "source": "file" if resolved.version_stated else "default"},
              "settings": settings, "unknown_variables": unknown}
    width = max(len(name) for name in settings)
    values = {name: _shown(s.value) for name, s in resolved.settings.items()}
    value_width = min(max(len(v) for v in values.values()), 40)
    lines = [f"{resolved.path}: {_format(resolved)}"]
    for name, s in resolved.settings.items():
        where = {"env": f" {s.origin}", "flag": f" {FLAGS.get(name, '')}"}.get(s.source, "")
        lines.append(f"{name:<{width}}  {values[name]:<{value_width}}  {s.source}{where}")
    emit(result, as_json, "\n".join(lines))


def validate(ctx: typer.Context, home: HomeOpt, api: ListenApiOpt = None, p2p: ListenP2pOpt = None,
             as_json: JsonOpt = False) -> None:
    """Check the settings and list every problem at once, each naming its key; exit 1 if any
    (2, as run does, when the directory is no home)."""
    resolved = _resolve(ctx, Home(home), api, p2p, as_json)
    errors = _errors(resolved)
    if as_json:
        typer.echo(json.dumps({"ok": not errors, "errors": errors}, sort_keys=True))
    elif errors:
        for error in errors:
            typer.echo(f"{error['key']}: {error['message']}")
        typer.echo(f"{len(errors)} error{'s' if len(errors) > 1 else ''}")
    else:
        typer.echo(f"ok: {resolved.path}, {_format(resolved)}")
    if errors:
        raise typer.Exit(1)


config_app.command()(show)
config_app.command()(validate)
