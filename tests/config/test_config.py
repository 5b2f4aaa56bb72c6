"""Settings: file, environment and flags in order of precedence; every bad value refused
with the setting's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from iomtnode.config import Config, ConfigError, load_config, render


def test_the_rendered_file_loads_back_to_the_same_settings(tmp_path: Path) -> None:
    config = Config(bootnodes=("10.0.0.1:7546", "gw.example:7546"), timeout_propose_s=2.5,
                    resend_interval_s=0.5)
    path = tmp_path / "config.toml"
    path.write_text(render(config))
    assert load_config(path, env={}) == config
    assert "timeout_propose_s = 2.5" in path.read_text()


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('timeout_cap_s = 20.0\ntimeout_prevote_s = 0.7\nmax_peers = 9\n')
    env = {"IOMTNODE_TIMEOUT_PREVOTE_S": "0.8", "IOMTNODE_MAX_PEERS": "12"}
    config = load_config(path, {"max_peers": 15, "ban_s": None}, env)
    assert (config.timeout_cap_s, config.timeout_prevote_s, config.max_peers) == (20.0, 0.8, 15)
    assert config.ban_s == Config().ban_s


@pytest.mark.parametrize(("name", "text"), [
    ("IOMTNODE_MAX_PEERS", "2_0"), ("IOMTNODE_MAX_PEERS", "\u0663"), ("IOMTNODE_MAX_PEERS", "1.0"),
    ("IOMTNODE_MAX_PEERS", "0x10"), ("IOMTNODE_TIMEOUT_PREVOTE_S", "0_5"),
    ("IOMTNODE_TIMEOUT_PREVOTE_S", "\u0660.5"), ("IOMTNODE_TIMEOUT_PREVOTE_S", "half"),
])
def test_a_number_in_the_environment_is_ascii_digits(name: str, text: str) -> None:
    """int() and float() take '2_0' and Arabic-Indic digits: an operator's typo (or a copy
    from a document) must not become another number than the one meant."""
    with pytest.raises(ConfigError, match=name.removeprefix("IOMTNODE_").lower()):
        load_config(None, env={name: text})


def test_numbers_in_the_environment_in_their_usual_forms_are_read() -> None:
    env = {"IOMTNODE_MAX_PEERS": " +12 ", "IOMTNODE_TIMEOUT_PREVOTE_S": "5e-1",
           "IOMTNODE_TIMEOUT_PRECOMMIT_S": ".7"}
    config = load_config(None, env=env)
    assert (config.max_peers, config.timeout_prevote_s, config.timeout_precommit_s) == (
        12, 0.5, 0.7)


@pytest.mark.parametrize(("values", "match"), [
    ({"timeout_propose_s": 0}, "timeout_propose_s"),
    ({"timeout_precommit_s": 61.0}, "timeout_precommit_s"),
    ({"timeout_delta_s": -1.0}, "timeout_delta_s"),
    ({"timeout_propose_s": 5.0, "timeout_cap_s": 4.0}, "timeout_cap_s"),
    ({"resend_interval_s": 0.0}, "resend_interval_s"),
    ({"fresh_grace_s": -1.0}, "fresh_grace_s"),
    ({"block_interval_s": 10.0, "empty_block_interval_s": 5.0}, "empty_block_interval_s"),
    ({"max_peers": 0}, "max_peers"),
    ({"max_peers": 10, "outbound_slots": 10}, "outbound_slots"),  # no inbound slot left
    ({"max_pending_per_ip": 0}, "max_pending_per_ip"),
    ({"max_inbound_per_netgroup": 1001}, "max_inbound_per_netgroup"),
    ({"address_ban_s": -1.0}, "address_ban_s"),
    ({"log_level": "chatty"}, "log_level"),
    ({"api_listen": "nowhere"}, "api_listen"),
    ({"api_max_connections": 0}, "api_max_connections"),
    ({"api_max_connections": 10, "api_max_connections_per_ip": 11}, "api_max_connections_per_ip"),
    ({"api_idle_timeout_s": 0.5}, "api_idle_timeout_s"),
    ({"api_requests_per_s": 0.0}, "api_requests_per_s"),
])
def test_out_of_range_values_name_the_setting(values: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Config(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "match"), [
    ("timeout_propose_s = 'soon'\n", "timeout_propose_s must be a number"),
    ("block_time = 1\n", "block_time is not a setting"),
    ("max_peers = true\n", "max_peers must be an integer"),
    ("timeout_cap_s = \n", "cannot read"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, env={})


def test_the_api_tls_files_are_settings_like_any_other(tmp_path: Path) -> None:
    config = Config(api_tls_cert="tls/api.crt", api_tls_key="/etc/iomt/api.key")
    path = tmp_path / "config.toml"
    path.write_text(render(config))
    assert load_config(path, env={}) == config
    env = {"IOMTNODE_API_TLS_CERT": "a.crt", "IOMTNODE_API_TLS_KEY": "a.key"}
    assert load_config(None, env=env).api_tls_cert == "a.crt"
    with pytest.raises(ConfigError, match="api_tls_cert and api_tls_key"):
        load_config(None, env={"IOMTNODE_API_TLS_CERT": "a.crt"})
