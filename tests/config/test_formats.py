"""config.toml states its format; a file of an older release (no ``version``) is read as
format 1, one of a newer format is refused with what to do, and older formats are read
through the migration steps in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iomtnode.config import CONFIG_VERSION, Config, ConfigError, load_config, render, resolve
from iomtnode.config.formats import CONFIG_MIGRATIONS, upgrade
from iomtnode.home import Home, init_home


def previous_release_file(config: Config) -> str:
    """config.toml as the release before format numbers wrote it: no ``version`` key."""
    text = render(config)
    assert f"\nversion = {CONFIG_VERSION}\n" in text
    return text.replace(f"\nversion = {CONFIG_VERSION}\n", "\n")


def test_init_writes_the_current_format(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home")
    resolved = resolve(Home(home.path).config_path, env={})
    assert (resolved.version, resolved.version_stated, resolved.issues) == (1, True, ())
    assert CONFIG_VERSION == 1


def test_a_file_without_a_version_is_format_1_of_an_older_release(tmp_path: Path) -> None:
    config = Config(max_peers=20, bootnodes=("gw.example:7546",))
    path = tmp_path / "config.toml"
    path.write_text(previous_release_file(config))
    resolved = resolve(path, env={})
    assert (resolved.version, resolved.version_stated) == (1, False)
    assert resolved.config == config


def test_a_newer_format_is_refused_saying_what_was_found_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"version = {CONFIG_VERSION + 1}\nsetting_of_the_future = 1\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    (issue,) = raised.value.issues  # the unknown key is not reported: the format explains it
    assert issue.key == "version"
    assert f"configuration format {CONFIG_VERSION + 1}" in issue.message
    assert f"reads formats up to {CONFIG_VERSION}" in issue.message
    assert "upgrade iomtnode" in issue.message


@pytest.mark.parametrize("raw", ["0", "-1", "'1'", "true", "1.0"])
def test_a_version_that_is_no_format_number_is_refused(tmp_path: Path, raw: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"version = {raw}\n")
    (issue,) = resolve(path, env={}).issues
    assert issue.key == "version"
    assert "version must be a whole number of 1 or more" in issue.message


def test_version_is_no_setting_of_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(render(Config()))
    assert load_config(path, env={"IOMTNODE_VERSION": "7"}) == Config()


def test_migration_steps_run_in_order_from_the_format_found() -> None:
    def rename(values: dict[str, Any]) -> dict[str, Any]:  # format 1 -> 2
        return {("max_peers" if k == "peer_limit" else k): v for k, v in values.items()}

    def double(values: dict[str, Any]) -> dict[str, Any]:  # format 2 -> 3
        return values | {"max_peers": values["max_peers"] * 2}

    steps = {1: rename, 2: double}
    assert upgrade({"peer_limit": 5}, 1, 3, steps) == {"max_peers": 10}
    assert upgrade({"max_peers": 5}, 2, 3, steps) == {"max_peers": 10}
    assert upgrade({"max_peers": 5}, 3, 3, steps) == {"max_peers": 5}


def test_there_is_a_step_from_every_older_format() -> None:
    assert sorted(CONFIG_MIGRATIONS) == list(range(1, CONFIG_VERSION))
