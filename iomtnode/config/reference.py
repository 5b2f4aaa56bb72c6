"""The settings' reference in docs/configuration.md, made from the code: each group of
settings with the comment config.toml gives it (:data:`~.template.TEMPLATE`), and for each
setting its type, default, allowed values (:data:`~.checks.RULES`), environment variable and
flag. ``python -m iomtnode.config.reference`` prints it; a test keeps the page equal to it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .checks import RULES
from .settings import DEFAULTS, FLAGS, KINDS, env_name
from .template import TEMPLATE

BEGIN = "<!-- settings: made by `python -m iomtnode.config.reference`; do not edit by hand -->"
END = "<!-- end of settings -->"
_TYPES = {str: "string", int: "integer", float: "number", tuple: "list of strings"}
_ASSIGNMENT = re.compile(r"^(\w+) = ")


def groups() -> list[tuple[str, list[str]]]:
    """config.toml's groups of settings in order: (their comment as one paragraph, names)."""
    found = []
    for block in TEMPLATE.split("\n\n"):
        lines = block.strip().splitlines()
        names = [m.group(1) for line in lines if (m := _ASSIGNMENT.match(line))]
        names = [name for name in names if name in KINDS]  # not the file's ``version``
        if names:
            text = " ".join(line.removeprefix("#").strip() for line in lines
                            if line.startswith("#"))
            found.append((text, names))
    return found


def _toml(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def markdown() -> str:
    """The reference, between its :data:`BEGIN` and :data:`END` markers."""
    allowed: dict[str, str] = {}
    for rule in RULES:  # a key with two rules (a listener: its form, then its own port)
        allowed[rule.key] = f"{allowed[rule.key]}; {rule.allowed}" if rule.key in allowed \
            else rule.allowed
    out = [BEGIN, ""]
    for text, names in groups():
        out += [f"### {', '.join(f'`{name}`' for name in names)}", "", text, "",
                "| setting | type | default | allowed | environment variable |",
                "|---|---|---|---|---|"]
        for name in names:
            variable = f"`{env_name(name)}`"
            if name in FLAGS:
                variable += f", flag `{FLAGS[name]}`"
            out.append(f"| `{name}` | {_TYPES[KINDS[name]]} | `{_toml(DEFAULTS[name])}` | "
                       f"{allowed[name]} | {variable} |")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown(), end="")
