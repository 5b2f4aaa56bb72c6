"""``iomtnode config show`` and ``config validate`` on a real home: every value with its
source (file, env, flag, default), every error at once with its key, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
import typer
from click.testing import Result
from typer.testing import CliRunner

from iomtnode.cli import app as main_app
from iomtnode.cli.config import config_app
from iomtnode.cli.node import run
from iomtnode.config import CONFIG_VERSION, Config, render
from iomtnode.config.settings import FLAGS
from iomtnode.home import init_home

app = typer.Typer()  # without the main app's callback, which configures this process's logs
app.add_typer(config_app, name="config")
app.command("run")(run)  # its refusals are the model of config's


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("IOMTNODE_")]:
        monkeypatch.delenv(name)


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["config", *map(str, args)], env=env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return init_home(tmp_path / "home").path


def test_show_gives_every_setting_with_its_source(home: Path) -> None:
    (home / "config.toml").write_text(render(Config(max_peers=30)).replace(
        'log_level = "info"\n', ""))
    result = invoke("show", "--home", home, "--api", "0.0.0.0:9000", "--json",
                    env={"IOMTNODE_BAN_S": "45"})
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    settings = shown["settings"]
    assert set(settings) == set(Config.__dataclass_fields__)
    assert settings["max_peers"] == {"value": 30, "source": "file"}
    assert settings["ban_s"] == {"value": 45.0, "source": "env"}
    assert settings["api_listen"] == {"value": "0.0.0.0:9000", "source": "flag"}
    assert settings["log_level"] == {"value": "info", "source": "default"}
    assert settings["bootnodes"] == {"value": [], "source": "file"}
    assert shown["version"] == {"value": CONFIG_VERSION, "source": "file"}


def test_show_as_text_names_the_variable_and_the_flag(home: Path) -> None:
    result = invoke("show", "--home", home, "--p2p", "0.0.0.0:7546",
                    env={"IOMTNODE_MAX_PEERS": "12"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:]}
    assert lines["max_peers"] == ["12", "env", "IOMTNODE_MAX_PEERS"]
    assert lines["p2p_listen"] == ['"0.0.0.0:7546"', "flag", "--p2p"]
    assert lines["api_listen"] == ['"127.0.0.1:7545"', "file"]
    assert result.output.splitlines()[0] == f"{home / 'config.toml'}: format 1"


def test_show_says_when_the_file_is_of_an_older_release(home: Path) -> None:
    path = home / "config.toml"
    path.write_text(path.read_text().replace(f"\nversion = {CONFIG_VERSION}\n", "\n"))
    result = invoke("show", "--home", home)
    assert result.exit_code == 0, result.output
    assert "states no version: written by an older release, read as format 1" in result.output
    shown = json.loads(invoke("show", "--home", home, "--json").output)
    assert shown["version"] == {"value": 1, "source": "default"}


def test_show_never_prints_the_admin_token_or_the_key(home: Path) -> None:
    output = invoke("show", "--home", home).output + invoke("show", "--home", home,
                                                            "--json").output
    assert (home / "admin_token").read_text().strip() not in output
    assert (home / "node_key").read_text().strip() not in output


def test_validate_lists_every_error_with_its_key_and_exits_1(home: Path) -> None:
    path = home / "config.toml"
    path.write_text(path.read_text() + "max_peer = 3\n")
    result = invoke("validate", "--home", home, "--api", "nowhere", "--json",
                    env={"IOMTNODE_TIMEOUT_CAP_S": "soon", "IOMTNODE_MAX_BLOCK_TXS": "0"})
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [e["key"] for e in report["errors"]] == [
        "max_peer", "api_listen", "max_block_txs", "timeout_cap_s"]
    messages = [e["message"] for e in report["errors"]]
    assert "did you mean max_peers?" in messages[0]
    assert "(from the command line)" in messages[1]
    assert "IOMTNODE_MAX_BLOCK_TXS" in messages[2]
    assert "IOMTNODE_TIMEOUT_CAP_S" in messages[3]
    text = invoke("validate", "--home", home, env={"IOMTNODE_MAX_BLOCK_TXS": "0"})
    assert text.exit_code == 1
    assert text.output.splitlines() == [
        f"max_peer: max_peer is not a setting (in {path}); did you mean max_peers?",
        "max_block_txs: max_block_txs must be between 1 and 10,000, got 0 (from the "
        "environment variable IOMTNODE_MAX_BLOCK_TXS)",
        "2 errors"]


def test_validate_passes_a_home_init_made(home: Path) -> None:
    result = invoke("validate", "--home", home, "--json")
    assert (result.exit_code, json.loads(result.output)) == (0, {"ok": True, "errors": []})
    assert invoke("validate", "--home", home).output.startswith("ok: ")


def test_show_refuses_wrong_settings_naming_them(home: Path) -> None:
    result = invoke("show", "--home", home, env={"IOMTNODE_LOG_LEVEL": "chatty"})
    assert result.exit_code == 1
    assert "log_level must be one of debug, info, warning, error" in result.output


def test_show_as_json_prints_the_errors_as_one_object(home: Path) -> None:
    # a script reading stdout gets the errors, not an empty stdout; the exit code still says
    result = invoke("show", "--home", home, "--json", env={"IOMTNODE_LOG_LEVEL": "chatty"})
    assert result.exit_code == 1
    shown = json.loads(result.stdout)
    assert shown["ok"] is False and "settings" not in shown
    [error] = shown["errors"]
    assert error["key"] == "log_level" and "must be one of debug" in error["message"]
    assert json.loads(invoke("show", "--home", home, "--json").stdout)["ok"] is True


@pytest.mark.parametrize("what", ["directory", "file"])
def test_a_directory_that_is_no_home_is_one_error_as_run_gives_it(tmp_path: Path, what: str
                                                                  ) -> None:
    # a file (a key file given as --home by mistake) is said to be one, not to be init'ed
    path = tmp_path / "patient.key"
    if what == "file":
        path.write_text("{}")
        expected = f"{path} is a file, not an iomtnode home (a directory)"
    else:
        path.mkdir()
        expected = (f"{path} is not an iomtnode home (config.toml missing); "
                    f"run: iomtnode init --home {path}")
    ran = CliRunner().invoke(app, ["run", "--home", str(path)])
    assert (ran.exit_code, ran.stderr) == (2, f"error: {expected}\n")
    for command in ("show", "validate"):
        result = invoke(command, "--home", path)
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {expected}\n")
        as_json = invoke(command, "--home", path, "--json")
        assert as_json.exit_code == 2
        assert json.loads(as_json.stdout) == {
            "ok": False, "errors": [{"key": "home", "message": expected}]}


def test_the_flags_are_those_of_run() -> None:
    """config show takes the flags run takes, so it can show what run would use (the global
    ones, --log-level, the main command takes for both)."""

    def options(command: typer.main.click.Command) -> set[str]:
        return {opt for param in command.params for opt in param.opts}

    one = typer.Typer()
    one.command()(run)
    show = typer.main.get_command(app).commands["config"].commands["show"]  # type: ignore[attr-defined]
    main = options(typer.main.get_command(main_app))
    assert set(FLAGS.values()) <= options(typer.main.get_command(one)) | main
    assert set(FLAGS.values()) <= options(show) | main
    assert set(FLAGS.values()) - main == {"--api", "--p2p"}


def test_the_main_app_has_the_config_commands() -> None:
    names = [group.name for group in main_app.registered_groups]
    assert "config" in names
    assert main_app.registered_groups[names.index("config")].typer_instance is config_app


def test_validate_refuses_a_variable_that_sets_nothing_and_names_the_closest(home: Path
                                                                               ) -> None:
    env = {"IOMTNODE_API_LISTN": "0.0.0.0:7545", "IOMTNODE_HOME": str(home)}
    result = invoke("validate", "--home", home, "--json", env=env)
    assert result.exit_code == 1
    assert json.loads(result.output) == {"ok": False, "errors": [{
        "key": "IOMTNODE_API_LISTN",
        "message": "IOMTNODE_API_LISTN is not a variable iomtnode reads (in the environment): "
                   "it sets nothing; did you mean IOMTNODE_API_LISTEN?"}]}
    text = invoke("validate", "--home", home, env=env)
    assert text.exit_code == 1
    assert text.output.splitlines() == [
        "IOMTNODE_API_LISTN: IOMTNODE_API_LISTN is not a variable iomtnode reads (in the "
        "environment): it sets nothing; did you mean IOMTNODE_API_LISTEN?", "1 error"]
    assert invoke("validate", "--home", home, env={"IOMTNODE_HOME": str(home)}).exit_code == 0


def test_show_warns_of_a_variable_that_sets_nothing(home: Path) -> None:
    env = {"IOMTNODE_MAX_PEER": "12"}
    result = invoke("show", "--home", home, "--json", env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["unknown_variables"] == [{"name": "IOMTNODE_MAX_PEER",
                                           "did_you_mean": "IOMTNODE_MAX_PEERS"}]
    assert shown["settings"]["max_peers"] == {"value": 50, "source": "file"}
    assert "warning: IOMTNODE_MAX_PEER is not a variable iomtnode reads" in result.stderr
    assert "did you mean IOMTNODE_MAX_PEERS?" in invoke("show", "--home", home, env=env).stderr


def test_show_takes_the_global_log_level_flag_as_run_does(tmp_path):
    """``iomtnode --log-level debug config show`` shows log_level from the flag, as run then
    logs at it (through the main app, whose callback takes the flag)."""
    home = init_home(tmp_path / "home").path
    try:
        result = CliRunner().invoke(main_app, ["--log-level", "error", "config", "show",
                                               "--home", str(home), "--json"])
    finally:
        structlog.reset_defaults()  # the main app configured this process's logs
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["settings"]["log_level"]
    assert shown == {"value": "error", "source": "flag"}


def test_validate_loads_the_api_tls_files_as_run_does(home: Path) -> None:
    """A certificate or key run cannot load is an error of validate and show, named by its
    setting (validate said ok, then run refused to start)."""
    from ..api.certs import make_cert

    one, other = make_cert(home / "tls", "one"), make_cert(home / "tls", "other")
    cases = {
        ("tls/missing.crt", "tls/one.key"): ("api_tls_cert", "is not a readable file"),
        ("tls/one.crt", "tls/missing.key"): ("api_tls_key", "is not a readable file"),
        ("tls/one.key", "tls/one.key"): ("api_tls_cert", "holds no PEM certificate"),
        ("tls/one.crt", "tls/other.key"): ("api_tls_cert", "cannot load"),
    }
    for (cert, key), (name, words) in cases.items():
        env = {"IOMTNODE_API_TLS_CERT": cert, "IOMTNODE_API_TLS_KEY": key}
        result = invoke("validate", "--home", home, "--json", env=env)
        assert result.exit_code == 1, (cert, key, result.output)
        [error] = json.loads(result.stdout)["errors"]
        assert error["key"] == name and words in error["message"], (cert, key, error)
        assert invoke("show", "--home", home, env=env).exit_code == 1
    env = {"IOMTNODE_API_TLS_CERT": str(one.cert), "IOMTNODE_API_TLS_KEY": str(other.key)}
    assert invoke("validate", "--home", home, env=env).exit_code == 1
    env["IOMTNODE_API_TLS_KEY"] = str(one.key)  # the pair, absolute paths
    assert invoke("validate", "--home", home, env=env).exit_code == 0
