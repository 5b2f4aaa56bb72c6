"""docs/configuration.md cannot drift from the code: its settings section is what
``python -m iomtnode.config.reference`` makes from the dataclass, the rules and config.toml's
comments, and every setting is in it once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from iomtnode.config import Config
from iomtnode.config.reference import BEGIN, END, groups, markdown

PAGE = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_the_page_holds_the_reference_made_from_the_code() -> None:
    text = PAGE.read_text()
    section = text[text.index(BEGIN):text.index(END) + len(END)] + "\n"
    assert section == markdown(), "run: python -m iomtnode.config.reference, and paste it"


def test_every_setting_is_in_one_group_with_a_description() -> None:
    named = [name for _, names in groups() for name in names]
    assert sorted(named) == sorted(f.name for f in dataclasses.fields(Config))
    assert all(text for text, _ in groups())


def test_the_reference_gives_each_settings_default_and_variable() -> None:
    reference = markdown()
    assert "| `max_peers` | integer | `50` | between 1 and 1,000 | `IOMTNODE_MAX_PEERS` |" in (
        reference)
    assert "`IOMTNODE_API_LISTEN`, flag `--api`" in reference
