"""Where each setting comes from: config.toml, then ``IOMTNODE_*`` environment variables,
then flags; the first of them, in reverse, that gives a setting wins, else its default.

:func:`resolve` reads them all and collects every problem, each naming its key and where
the bad value came from (the file, the environment variable, the command line);
:func:`load_config` is the node's way in: a :class:`Config`, or :class:`ConfigError` listing
every problem at once.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from .checks import check
from .environment import UnknownVariable, unknown_variables
from .errors import ConfigError, Issue
from .formats import CONFIG_VERSION, UNVERSIONED, upgrade
from .settings import DEFAULTS, KINDS, Config, env_name

SOURCES = ("default", "file", "env", "flag")  # lowest precedence first
VERSION_KEY = "version"  # config.toml's format (not a setting: no variable or flag sets it)
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number",
               tuple: "a list of strings"}


@dataclass(frozen=True, slots=True)
class Setting:
    """A setting's effective value and the source it came from."""

    value: Any
    source: str  # one of SOURCES
    origin: str  # where exactly: the file's path, the variable's name, the flag's, "default"


@dataclass(frozen=True, slots=True)
class Resolved:
    """Everything known about one node's settings, wrong ones included."""

    path: Path | None
    version: int  # the file's format (UNVERSIONED when it states none)
    version_stated: bool  # the file has a ``version`` key
    settings: dict[str, Setting]  # every setting (a wrong one: the value that was given)
    issues: tuple[Issue, ...]  # every problem, in the order of the settings
    config: Config | None  # None when there is any issue
    # IOMTNODE_* variables of the environment that set nothing: not an issue (the node runs
    # with them, warning), but ``config validate`` refuses them
    unknown_variables: tuple[UnknownVariable, ...]


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Settings from ``path`` (if it exists), then ``env`` (default: this process's), then
    ``overrides`` (flags; None = not given). Raises :class:`ConfigError` naming every
    setting at fault."""
    resolved = resolve(path, overrides, env)
    if resolved.config is None:
        raise ConfigError.of(resolved.issues)
    return resolved.config


_KEY_LINE = re.compile(r"\s*([A-Za-z0-9_]+)\s*=")


def _twice(path: Path) -> str:
    """For a file that does not parse: the first setting it gives twice, with both lines (a
    setting added at the end of the file that ``init`` wrote, where every setting has its
    line already), or nothing."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        match = _KEY_LINE.match(line)
        if match is None:
            continue
        if match[1] in seen:
            return (f"; {match[1]} is set twice (lines {seen[match[1]]} and {number}): "
                    "the file has one line per setting, edit that one")
        seen[match[1]] = number
    return ""


def resolve(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Resolved:
    """Every setting's value and source, and every problem (see :func:`load_config`)."""
    env = os.environ if env is None else env
    unknown = unknown_variables(env)
    given: dict[str, Setting] = {}
    issues: list[Issue] = []
    file: dict[str, Any] = {}
    version, stated = UNVERSIONED, False
    if path is not None and path.exists():
        try:
            file = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
            issue = Issue(path.name, f"cannot read {path}: {exc}{_twice(path)}")
            return Resolved(path, version, stated, _with_defaults(given), (issue,), None,
                            unknown)
        stated = VERSION_KEY in file
        version, problem = _version(file.pop(VERSION_KEY, UNVERSIONED), path)
        if problem is not None:
            return Resolved(path, version, stated, _with_defaults(given), (problem,), None,
                            unknown)
        file = upgrade(file, version)
        for key, raw in file.items():
            given[key] = Setting(raw, "file", str(path))
    for name in KINDS:
        if env_name(name) in env:
            given[name] = Setting(env[env_name(name)], "env", env_name(name))
    for name, raw in (overrides or {}).items():
        if raw is not None:
            given[name] = Setting(raw, "flag", "the command line")
    values = dict(DEFAULTS)
    wrong_type: set[str] = set()
    for key, setting in given.items():
        if key not in KINDS:
            issues.append(Issue(key, _unknown(key, setting)))
            continue
        try:
            values[key] = _typed(setting.value, KINDS[key], from_text=setting.source == "env")
        except TypeError:
            wrong_type.add(key)
            issues.append(Issue(key, f"{key} must be {_TYPE_NAMES[KINDS[key]]}, got "
                                     f"{setting.value!r}{_where(setting)}"))
    for issue in check(values, skip=wrong_type):
        setting = given.get(issue.key)
        issues.append(Issue(issue.key, issue.message + ("" if setting is None
                                                        else _where(setting))))
    settings = _with_defaults({k: Setting(values[k] if k not in wrong_type else s.value,
                                          s.source, s.origin)
                               for k, s in given.items() if k in KINDS})
    order = {name: i for i, name in enumerate(KINDS)}
    issues.sort(key=lambda issue: order.get(issue.key, -1))  # unknown keys first
    config = None if issues else Config(**values)
    return Resolved(path, version, stated, settings, tuple(issues), config, unknown)


def _with_defaults(given: Mapping[str, Setting]) -> dict[str, Setting]:
    return {name: given.get(name) or Setting(DEFAULTS[name], "default", "default")
            for name in KINDS}


def _version(raw: Any, path: Path) -> tuple[int, Issue | None]:
    """The file's format, and the problem with it if this release cannot read it."""
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        return UNVERSIONED, Issue(VERSION_KEY, f"{VERSION_KEY} must be a whole number of 1 "
                                               f"or more, got {raw!r} (in {path})")
    if raw > CONFIG_VERSION:
        return raw, Issue(VERSION_KEY, (
            f"{path} is configuration format {raw}, but this iomtnode ({__version__}) reads "
            f"formats up to {CONFIG_VERSION}: it was written by a newer release; upgrade "
            f"iomtnode (docs/upgrading.md)"))
    return raw, None


# an environment variable's number, ASCII only (its rules then say what is out of range)
_NUMBER_TEXT = {
    int: re.compile(r"[+-]?[0-9]+"),
    float: re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|nan)",
                      re.IGNORECASE),
}


def _typed(raw: Any, kind: type, *, from_text: bool) -> Any:
    """``raw`` as a value of ``kind``; TypeError if it is not one (an environment variable's
    text is parsed; a file's TOML value must be of the type already)."""
    if from_text:
        if kind in (int, float) and not _NUMBER_TEXT[kind].fullmatch(raw.strip()):
            raise TypeError(raw)  # int() and float() also take '2_0', '٣' and ' 1e3 ' as numbers
        try:
            if kind is int:
                return int(raw)
            if kind is float:
                return float(raw)
        except ValueError:
            raise TypeError(raw) from None
        if kind is tuple:  # comma-separated
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        return raw
    if isinstance(raw, bool):
        raise TypeError(raw)
    if kind is float and isinstance(raw, int | float):
        return float(raw)
    if kind is tuple and isinstance(raw, list | tuple) and all(isinstance(i, str) for i in raw):
        return tuple(raw)
    if kind in (int, str) and isinstance(raw, kind):
        return raw
    raise TypeError(raw)


def _where(setting: Setting) -> str:
    if setting.source == "env":
        return f" (from the environment variable {setting.origin})"
    if setting.source == "file":
        return f" (in {setting.origin})"
    return " (from the command line)" if setting.source == "flag" else ""


def _unknown(key: str, setting: Setting) -> str:
    close = difflib.get_close_matches(key, list(KINDS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{key} is not a setting{_where(setting)}{hint}"
