"""The genesis ceremony's command line: ``init --no-genesis [--key-file]``, ``genesis card``,
``genesis new``, ``genesis verify [--install]``, and every refusal with its reason."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from iomtnode.chain.chain import Chain
from iomtnode.cli.genesis import genesis_app
from iomtnode.cli.node import init, run
from iomtnode.config import load_config
from iomtnode.consensus.signing import SIGNING_STATE_FILE
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.store import BlockStore

app = typer.Typer()
app.command("init")(init)
app.command("run")(run)
app.add_typer(genesis_app, name="genesis")
CHAIN = "ward-net"


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args: str | Path) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(code: int, *args: str | Path) -> str:
    result = cli(*args)
    assert result.exit_code == code, result.output
    return result.stderr


@pytest.fixture
def ceremony(tmp_path: Path) -> list[tuple[Path, Path]]:
    """Four homes waiting for a genesis (the last one made from a key file), each with its
    card: ``[(home, card)]``."""
    key_file = tmp_path / "imported.key"
    key_file.write_text(SigningKey(b"\x07" * 32).seed.hex() + "\n")  # as a Secret holds it
    made = []
    for i in range(4):
        home, card = tmp_path / f"h{i}", tmp_path / f"node{i}.card"
        extra = ("--key-file", key_file) if i == 3 else ()
        ok("init", "--home", home, "--no-genesis", *extra)
        ok("genesis", "card", "--home", home, "--chain-id", CHAIN,
           "--address", f"node{i}.ward.example:7546", "--name", f"site {i}", "--out", card)
        made.append((home, card))
    return made


def cards(made: list[tuple[Path, Path]]) -> list[str | Path]:
    return [a for _, card in made for a in ("--card", card)]


def test_verify_install_prints_the_settings_it_wrote_as_config_toml_lines(tmp_path, ceremony):
    """The text output shows each setting as the line config.toml now holds, not as a
    Python list."""
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out",
       tmp_path / "genesis.json")
    result = cli("genesis", "verify", tmp_path / "genesis.json", "--home", ceremony[0][0],
                 *cards(ceremony), "--install")
    assert result.exit_code == 0, result.output
    shown = dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)
    config = tomllib.loads("\n".join(f"{k} = {v}" for k, v in shown.items()))
    written = tomllib.loads((ceremony[0][0] / "config.toml").read_text())
    assert {key: written[key] for key in config} == config
    assert config["bootnodes"] == [f"node{j}.ward.example:7546" for j in (1, 2, 3)]
    assert config["advertise_address"] == "node0.ward.example:7546"


def installed_pair(tmp_path: Path, address: Callable[[int], str]) -> list[Path]:
    """Two new homes whose cards give ``address(i)``, a genesis of both, installed in each
    with both cards: the homes."""
    made = []
    for i in range(2):
        home, card = tmp_path / f"h{i}", tmp_path / f"node{i}.card"
        ok("init", "--home", home, "--no-genesis")
        ok("genesis", "card", "--home", home, "--chain-id", CHAIN,
           "--address", address(i), "--out", card)
        made.append((home, card))
    ok("genesis", "new", "--chain-id", CHAIN, *cards(made), "--out", tmp_path / "genesis.json")
    for home, _ in made:
        ok("genesis", "verify", tmp_path / "genesis.json", "--home", home, *cards(made),
           "--install")
    return [home for home, _ in made]


def test_the_ceremony_gives_every_home_one_genesis_and_points_each_at_the_others(
        tmp_path, ceremony):
    new = ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out",
             tmp_path / "genesis.json", "--admission-threshold", "2")
    assert len(new["authorities"]) == 4 and new["chain_id"] == CHAIN
    for i, (home, _) in enumerate(ceremony):
        checked = ok("genesis", "verify", tmp_path / "genesis.json", "--home", home,
                     "--expect-hash", new["genesis_hash"], *cards(ceremony), "--install")
        assert checked["genesis_hash"] == new["genesis_hash"] and checked["installed"]
        assert Genesis.load(home / "genesis.json").hash.hex() == new["genesis_hash"]
        config = load_config(home / "config.toml", env={})
        assert config.advertise_address == f"node{i}.ward.example:7546"
        assert set(config.bootnodes) == {f"node{j}.ward.example:7546" for j in range(4)
                                         if j != i}
        assert config.p2p_listen == "0.0.0.0:7546"  # reachable from the other hosts
    # installing again is harmless
    assert not ok("genesis", "verify", tmp_path / "genesis.json", "--home", ceremony[0][0],
                  "--install")["installed"]
    genesis = Genesis.load(tmp_path / "genesis.json")
    assert genesis.admission_threshold == 2
    assert SigningKey(b"\x07" * 32).public in genesis.authorities
    # an imported key may have signed before: no signing state (the node defers)
    assert [(home / SIGNING_STATE_FILE).exists() for home, _ in ceremony] == [
        True, True, True, False]


def test_an_authority_at_an_ipv6_address_listens_on_every_ipv6_interface(tmp_path):
    """A card at [2001:db8::N]:7546 on a home listening on loopback: p2p_listen becomes
    [::]:7546 (it became 0.0.0.0:7546, IPv4 only, where no peer dialing the card's address
    could reach it)."""
    for i, home in enumerate(installed_pair(tmp_path, lambda i: f"[2001:db8::{i + 1}]:7546")):
        config = load_config(home / "config.toml", env={})
        assert config.advertise_address == f"[2001:db8::{i + 1}]:7546"
        assert config.p2p_listen == "[::]:7546"


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_an_authority_at_a_loopback_address_stays_on_loopback(tmp_path, host):
    """A ceremony rehearsed on one host (cards at 127.0.0.1): p2p_listen became 0.0.0.0:PORT,
    opening the node to every interface though no other host dials a loopback card."""
    for i, home in enumerate(installed_pair(tmp_path, lambda i: f"{host}:76{i}6")):
        assert load_config(home / "config.toml", env={}).p2p_listen == f"{host}:76{i}6"


def test_installing_without_cards_warns_when_the_node_would_find_no_peer(tmp_path, ceremony):
    """Without --card the config is left as it was: with no bootnodes, the node of a network
    of several authorities would never connect, and nothing said so."""
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out",
       tmp_path / "genesis.json")
    home = ceremony[0][0]
    result = cli("genesis", "verify", tmp_path / "genesis.json", "--home", home, "--install")
    assert result.exit_code == 0, result.output
    assert "warning: no --card given" in result.stderr and "no bootnodes" in result.stderr
    assert (home / "genesis.json").exists()
    other = ceremony[1][0]  # bootnodes set by hand: nothing to warn of
    config = other / "config.toml"
    config.write_text(config.read_text().replace("bootnodes = []",
                                                 'bootnodes = ["node0.ward.example:7546"]'))
    result = cli("genesis", "verify", tmp_path / "genesis.json", "--home", other, "--install")
    assert result.exit_code == 0 and result.stderr == "", result.output


def test_a_listen_port_other_than_the_cards_is_kept_with_a_warning(tmp_path, ceremony):
    """An operator's own p2p_listen on another port than the card's: peers dial the card's
    port, so unless a port forward joins them the node is unreachable; it was kept silently."""
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out",
       tmp_path / "genesis.json")
    (home, _), (same, _) = ceremony[0], ceremony[1]
    for where, listen in ((home, "0.0.0.0:7001"), (same, "0.0.0.0:7546")):
        config = where / "config.toml"
        text = config.read_text()
        start = text.index("p2p_listen")
        end = text.index("\n", start)
        config.write_text(text[:start] + f'p2p_listen = "{listen}"' + text[end:])
    result = cli("genesis", "verify", tmp_path / "genesis.json", "--home", home,
                 *cards(ceremony), "--install")
    assert result.exit_code == 0, result.output
    assert "advertises port 7546" in result.stderr and "(port 7001)" in result.stderr
    assert load_config(home / "config.toml", env={}).p2p_listen == "0.0.0.0:7001"  # kept
    result = cli("genesis", "verify", tmp_path / "genesis.json", "--home", same,
                 *cards(ceremony), "--install")
    assert result.exit_code == 0 and result.stderr == "", result.output


def test_a_home_without_genesis_refuses_to_run_and_names_the_command(ceremony):
    home, _ = ceremony[0]
    assert "iomtnode genesis verify GENESIS_FILE --home" in refused(2, "run", "--home", home)


def test_a_card_for_another_chain_is_refused(tmp_path, ceremony):
    other = tmp_path / "other.card"
    ok("genesis", "card", "--home", ceremony[0][0], "--chain-id", "other-net",
       "--address", "node0.ward.example:7546", "--out", other)
    err = refused(1, "genesis", "new", "--chain-id", CHAIN, *cards(ceremony[1:]),
                  "--card", other, "--out", tmp_path / "g.json")
    assert f"{other}: the card was made for chain 'other-net'" in err
    assert not (tmp_path / "g.json").exists()


def test_a_tampered_card_is_refused_naming_its_file(tmp_path, ceremony):
    card = ceremony[2][1]
    doc = json.loads(card.read_text())
    doc["address"] = "attacker.example:7546"
    card.write_text(json.dumps(doc))
    err = refused(1, "genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out",
                  tmp_path / "g.json")
    assert f"{card}: the card's signature does not verify" in err


@pytest.mark.parametrize("content, says", [
    ("{}", "is not a card: it lacks version, chain_id, node_id, address, name, signature"),
    ("[1, 2]", "is not a card: a card is a JSON object, this is an array"),
    ('{"version": {"source": "file"}}', "is not a card: it lacks chain_id"),
])
def test_a_file_that_is_not_a_card_is_bad_input_naming_the_file(tmp_path, ceremony, content,
                                                                 says):
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", tmp_path / "g.json")
    other = tmp_path / "config.json"
    other.write_text(content)
    for command in (("new", "--chain-id", CHAIN, "--out", tmp_path / "g2.json"),
                    ("verify", tmp_path / "g.json", "--home", ceremony[0][0])):
        err = refused(2, "genesis", *command, *cards(ceremony), "--card", other)
        assert err.startswith(f"error: {other} {says}") and "Traceback" not in err


def test_two_cards_of_one_key_are_refused(tmp_path, ceremony):
    again = tmp_path / "again.card"
    ok("genesis", "card", "--home", ceremony[0][0], "--chain-id", CHAIN,
       "--address", "elsewhere.example:7546", "--out", again)
    err = refused(1, "genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--card", again,
                  "--out", tmp_path / "g.json")
    assert "are cards of the same key" in err


@pytest.mark.parametrize("threshold", ["0", "5"])
def test_an_admission_threshold_out_of_range_is_refused(tmp_path, ceremony, threshold):
    err = refused(1, "genesis", "new", "--chain-id", CHAIN, *cards(ceremony),
                  "--admission-threshold", threshold, "--out", tmp_path / "g.json")
    assert "admission threshold must be from 1 to 4" in err


@pytest.mark.parametrize("address", ["node0.ward.example", "0.0.0.0:7546", "node0:70000"])
def test_a_card_with_an_address_peers_cannot_dial_is_refused(tmp_path, ceremony, address):
    err = refused(1, "genesis", "card", "--home", ceremony[0][0], "--chain-id", CHAIN,
                  "--address", address)
    assert "address" in err


def test_a_home_whose_key_is_not_an_authority_is_refused(tmp_path, ceremony):
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony[:3]), "--out",
       tmp_path / "g.json")
    home = ceremony[3][0]
    err = refused(1, "genesis", "verify", tmp_path / "g.json", "--home", home, "--install")
    assert "is not among the 3 authorities" in err
    assert not (home / "genesis.json").exists()


def test_a_genesis_with_another_hash_than_expected_is_refused(tmp_path, ceremony):
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", tmp_path / "g.json")
    err = refused(1, "genesis", "verify", tmp_path / "g.json", "--home", ceremony[0][0],
                  "--expect-hash", "00" * 32, "--install")
    assert "not the expected" in err
    assert not (ceremony[0][0] / "genesis.json").exists()


def test_a_card_of_a_key_outside_the_genesis_is_refused(tmp_path, ceremony):
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony[:3]), "--out",
       tmp_path / "g.json")
    err = refused(1, "genesis", "verify", tmp_path / "g.json", "--home", ceremony[0][0],
                  *cards(ceremony))
    assert f"{ceremony[3][1]}: the card's key" in err and "is not an authority" in err


def test_installing_over_another_chains_blocks_is_refused(tmp_path, ceremony):
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", tmp_path / "g.json")
    home = ceremony[0][0]
    other = Genesis(chain_id="other-net", time_ms=1,
                    authorities=(SigningKey(b"\x01" * 32).public,), admission_threshold=1)
    with BlockStore.open(home / "data") as store:
        Chain(store, other)  # commits the other chain's block 0
    err = refused(1, "genesis", "verify", tmp_path / "g.json", "--home", home, "--install")
    assert "holds the blocks of chain" in err
    assert not (home / "genesis.json").exists()


def test_installing_over_another_genesis_is_refused(tmp_path, ceremony):
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", tmp_path / "a.json")
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", tmp_path / "b.json",
       "--time-ms", "5")
    home = ceremony[0][0]
    ok("genesis", "verify", tmp_path / "a.json", "--home", home, "--install")
    err = refused(1, "genesis", "verify", tmp_path / "b.json", "--home", home, "--install")
    assert "already has the genesis of chain ward-net" in err
    # and says how to keep the key the cards name: a new home for it, waiting for a genesis
    assert f"--no-genesis --key-file {home / 'node_key'}" in " ".join(err.split())
    new = tmp_path / "new-home"
    ok("init", "--home", new, "--no-genesis", "--key-file", home / "node_key")
    ok("genesis", "verify", tmp_path / "b.json", "--home", new, "--install")


def test_the_same_cards_and_time_rebuild_the_same_genesis(tmp_path, ceremony):
    one = ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--time-ms", "9",
             "--out", tmp_path / "a.json")
    two = ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony[::-1]), "--time-ms", "9",
             "--out", tmp_path / "b.json")
    assert one["genesis_hash"] == two["genesis_hash"]


def test_genesis_json_ends_with_a_newline_that_its_hash_does_not_depend_on(tmp_path, ceremony):
    # `cat genesis.json` ends its line; the hash is over the fields, not the text, so a file
    # without the newline (or with its own indentation) is the same chain
    out = tmp_path / "g.json"
    made = ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", out)
    text = out.read_text()
    assert text.endswith("}\n")
    bare = tmp_path / "bare.json"
    bare.write_text(text.rstrip("\n"))
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(json.loads(text)))
    for path in (out, bare, flat):
        assert Genesis.load(path).hash.hex() == made["genesis_hash"]
        verified = ok("genesis", "verify", path, "--home", ceremony[0][0],
                      "--expect-hash", made["genesis_hash"])
        assert verified["genesis_hash"] == made["genesis_hash"]


def test_init_imports_a_key_file_with_a_genesis(tmp_path):
    key = SigningKey(b"\x09" * 32)
    genesis = Genesis(chain_id=CHAIN, time_ms=1, authorities=(key.public,),
                      admission_threshold=1)
    (tmp_path / "genesis.json").write_text(genesis.to_text())
    (tmp_path / "k").write_text(key.seed.hex())
    made = ok("init", "--home", tmp_path / "h", "--key-file", tmp_path / "k", "--genesis",
              tmp_path / "genesis.json")
    assert made["node_id"] == key.public.hex() and made["genesis_hash"] == genesis.hash.hex()
    assert (tmp_path / "h" / "node_key").read_text().strip() == key.seed.hex()
    assert not made["signing_state"] and not (tmp_path / "h" / SIGNING_STATE_FILE).exists()


def test_a_key_file_every_user_can_read_is_imported_with_a_warning(tmp_path):
    """A mounted Secret is often 0644: the key is still imported (into a 0600 node_key),
    and the operator is told that the original is readable by others."""
    key_file = tmp_path / "k"
    key_file.write_text(SigningKey(b"\x09" * 32).seed.hex())
    key_file.chmod(0o644)
    loose = cli("init", "--home", tmp_path / "h", "--key-file", key_file)
    assert loose.exit_code == 0, loose.output
    assert f"{key_file} is open to every user (mode 0644)" in " ".join(loose.stderr.split())
    assert (tmp_path / "h" / "node_key").stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o440)  # the StatefulSet's Secret, read through the pod's group
    tight = cli("init", "--home", tmp_path / "h2", "--key-file", key_file)
    assert tight.exit_code == 0 and "every user" not in tight.stderr


def test_a_new_one_authority_chain_from_a_key_file_keeps_its_signing_state(tmp_path):
    """The chain is made now: its lone authority cannot have signed on it, and without a
    signing state it would never sign."""
    (tmp_path / "k").write_text(SigningKey(b"\x09" * 32).seed.hex())
    made = ok("init", "--home", tmp_path / "h", "--key-file", tmp_path / "k")
    assert made["signing_state"] and (tmp_path / "h" / SIGNING_STATE_FILE).exists()


@pytest.mark.parametrize("content, match", [("zz", "hex ed25519 seed"),
                                            ("00" * 16, "32-byte seed")])
def test_a_bad_key_file_is_refused(tmp_path, content, match):
    (tmp_path / "k").write_text(content)
    assert match in refused(2, "init", "--home", tmp_path / "h", "--no-genesis",
                            "--key-file", tmp_path / "k")
    assert not (tmp_path / "h").exists()


def test_no_genesis_and_a_genesis_exclude_each_other(tmp_path):
    assert "exclude each other" in refused(2, "init", "--home", tmp_path / "h", "--no-genesis",
                                           "--genesis", tmp_path / "g.json")


def test_install_keeps_the_operators_config_file_and_changes_only_its_own_settings(
        tmp_path, ceremony):
    """--install edits config.toml in place: the operator's comments and settings stay."""
    new = ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out",
             tmp_path / "genesis.json")
    home = ceremony[0][0]
    path = home / "config.toml"
    mine = ("# ward 3: ask Dana before changing the timeouts\n"
            "timeout_propose_s = 2.5  # slow radio link\n"
            'bootnodes = [\n    "old.example:7546",\n]\n')
    path.write_text(path.read_text().replace("timeout_propose_s = 1.0\n", "")
                    .replace("bootnodes = []\n", "") + mine)
    ok("genesis", "verify", tmp_path / "genesis.json", "--home", home,
       "--expect-hash", new["genesis_hash"], *cards(ceremony), "--install")
    text = path.read_text()
    assert "# ward 3: ask Dana before changing the timeouts\n" in text
    assert "timeout_propose_s = 2.5  # slow radio link\n" in text
    assert "old.example" not in text
    config = load_config(path, env={})
    assert config.timeout_propose_s == 2.5
    assert set(config.bootnodes) == {f"node{j}.ward.example:7546" for j in range(1, 4)}
    assert config.advertise_address == "node0.ward.example:7546"
    assert config.p2p_listen == "0.0.0.0:7546"


def test_every_genesis_card_command_in_the_docs_names_the_chain():
    """A card is made for one chain: `genesis card` without --chain-id fails as written."""
    root = Path(__file__).resolve().parents[2]
    for doc in (root / "docs" / "network.md", root / "deploy" / "README.md",
                root / "deploy" / "k8s" / "keys.example.yaml"):
        lines = [line.lstrip("# ").rstrip() for line in doc.read_text().splitlines()]
        commands = " \n".join(lines).replace("\\ \n", " ").split(" \n")
        made = [c for c in commands if "iomtnode genesis card" in c]
        assert made, doc
        for command in made:
            assert "--chain-id" in command, f"{doc.name}: {command}"


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_an_install_that_fails_midway_leaves_the_home_as_it_was(tmp_path, ceremony, monkeypatch,
                                                                step):
    """--install writes genesis.json whole or not at all: when writing it fails (a full disk,
    a crash), no genesis.json, torn or whole, and no temporary file is left, and the
    install can be run again."""
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", tmp_path / "g.json")
    home = ceremony[0][0]
    before = sorted(p.name for p in home.iterdir())
    real = getattr(os, step)

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, step, broken)
    err = refused(2, "genesis", "verify", tmp_path / "g.json", "--home", home, "--install")
    assert f"cannot write {home / 'genesis.json'}: No space left on device" in err
    assert sorted(p.name for p in home.iterdir()) == before  # no genesis.json, no temporary
    monkeypatch.setattr(os, step, real)
    ok("genesis", "verify", tmp_path / "g.json", "--home", home, "--install")
    assert Genesis.load(home / "genesis.json") == Genesis.load(tmp_path / "g.json")
    assert sorted(p.name for p in home.iterdir()) == sorted([*before, "genesis.json"])


@pytest.mark.parametrize("step", ["fsync", "replace"])
@pytest.mark.parametrize("command", ["card", "new"])
def test_a_card_or_genesis_that_fails_midway_leaves_no_file(tmp_path, ceremony, monkeypatch,
                                                           step, command):
    """`genesis card --out` and `genesis new --out` write whole or not at all: a full disk
    or a crash midway leaves no file (a torn one would be refused as existing when the
    command is run again), and the command can be run again."""
    home = ceremony[0][0]
    out = tmp_path / "out" / "made"
    out.parent.mkdir()
    args = (["card", "--home", home, "--chain-id", CHAIN, "--address", "n.ward.example:7546"]
            if command == "card" else ["new", "--chain-id", CHAIN, *cards(ceremony)])
    real = getattr(os, step)

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, step, broken)
    err = refused(2, "genesis", *args, "--out", out)
    assert f"cannot write {out}: No space left on device" in err
    assert list(out.parent.iterdir()) == []  # no file, torn or whole, and no temporary
    monkeypatch.setattr(os, step, real)
    ok("genesis", *args, "--out", out)
    assert json.loads(out.read_text())["chain_id"] == CHAIN
    assert list(out.parent.iterdir()) == [out]


def test_install_writes_the_config_whole_and_synced(tmp_path, ceremony, monkeypatch):
    """--install's edit of config.toml is synced before it replaces the file: a power cut
    just after cannot leave an empty config.toml."""
    ok("genesis", "new", "--chain-id", CHAIN, *cards(ceremony), "--out", tmp_path / "g.json")
    home = ceremony[0][0]
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ok("genesis", "verify", tmp_path / "g.json", "--home", home, *cards(ceremony), "--install")
    assert str(home / ".config.toml.tmp") in synced
    assert load_config(home / "config.toml", env={}).advertise_address == \
        "node0.ward.example:7546"
