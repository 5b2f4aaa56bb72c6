"""What is wrong with a node's settings: one :class:`Issue` per problem, each naming the
setting (its key in config.toml) it is about."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem with one setting."""

    key: str  # the setting's name in config.toml (or the file's name, when it cannot be read)
    message: str  # a whole sentence that names the key, the value found and where it came from


class ConfigError(ValueError):
    """Settings that are missing, unknown, of the wrong type or out of range; the message
    names every setting at fault (:attr:`issues` lists them one by one)."""

    def __init__(self, message: str, issues: Sequence[Issue] = ()) -> None:
        super().__init__(message)
        self.issues = tuple(issues)

    @classmethod
    def of(cls, issues: Sequence[Issue]) -> ConfigError:
        """The error of ``issues`` (at least one), all of them in its message."""
        if len(issues) == 1:
            return cls(issues[0].message, issues)
        lines = "\n".join(f"  {issue.message}" for issue in issues)
        return cls(f"{len(issues)} settings are wrong:\n{lines}", issues)
