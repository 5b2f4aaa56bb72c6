"""A node's home is its owner's alone: ``init`` makes it 0700 (``data/`` too) and its secret
files 0600 whatever the umask, and a node refuses to start from a home, key or admin token
that another user could open, naming the path, the mode found and the ``chmod`` that fixes
it (deploy/README.md)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from iomtnode.config import Config
from iomtnode.core.crypto import SigningKey
from iomtnode.home import HOME_MODE, SECRET_MODE, Home, HomeError, init_home, read_key, write_key
from iomtnode.node import Node
from iomtnode.store.files import write_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o002)  # a permissive umask: group-writable, world-readable by default
    try:
        yield
    finally:
        os.umask(old)


def test_init_makes_the_home_private_whatever_the_umask(tmp_path: Path, open_umask: None):
    ready = tmp_path / "made-before"
    ready.mkdir(mode=0o775)  # an empty directory the operator made: init takes it over
    for path in (tmp_path / "a" / "node", ready):
        home = init_home(path)
        assert mode(home.path) == HOME_MODE == 0o700
        assert mode(home.data_path) == HOME_MODE
        assert mode(home.key_path) == mode(home.token_path) == SECRET_MODE == 0o600
        home.check()


@pytest.mark.parametrize(("name", "bad", "fix"), [
    ("", 0o755, "chmod 700"),  # the home itself, as init made it before
    ("", 0o701, "chmod 700"),  # even only others' search bit
    ("node_key", 0o640, "chmod 600"),
    ("admin_token", 0o604, "chmod 600"),
])
def test_a_home_open_to_others_is_refused_at_start(tmp_path: Path, name: str, bad: int,
                                                   fix: str):
    home = init_home(tmp_path / "node")
    path = home.path / name if name else home.path
    path.chmod(bad)
    with pytest.raises(HomeError) as info:
        Node(home, Config())
    message = str(info.value)
    assert str(path) in message and f"mode {bad:04o}" in message
    assert f"{fix} {path}" in message
    path.chmod(HOME_MODE if not name else SECRET_MODE)
    Home(home.path).check()  # fixed as the message says: accepted


def test_localnet_homes_are_private(tmp_path: Path, open_umask: None):
    from iomtnode.localnet.layout import add_node_home, prepare

    manifest = prepare(tmp_path / "net", 2, base_port=None)
    add_node_home(manifest)
    for entry in manifest.nodes:
        assert mode(entry.home) == HOME_MODE and mode(entry.home / "node_key") == SECRET_MODE
        Home(entry.home).check()


def test_write_atomic_replaces_a_file_whole_or_not_at_all(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """A rename that fails leaves the old file as it was and no temporary file beside it; one
    that succeeds leaves the whole new file (and nothing else)."""
    path = tmp_path / "genesis.json"
    write_atomic(path, b"old\n", 0o644)
    assert path.read_bytes() == b"old\n"
    real_replace = os.replace

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="Input/output error"):
        write_atomic(path, b"new " * 10_000, 0o644)
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["genesis.json"]
    monkeypatch.setattr(os, "replace", real_replace)
    write_atomic(path, b"new " * 10_000, 0o644)
    assert path.read_bytes() == b"new " * 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["genesis.json"]


def test_a_command_key_file_is_refused_for_what_it_is(tmp_path: Path):
    """``device send --key`` and ``device show --key`` read a key file, not a home: a
    directory is named as one (not "chmod 600" it), and a shared key file's error speaks of
    the key, not of a node that refuses to start."""
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    with pytest.raises(HomeError, match="is a directory, not a key file"):
        read_key(folder)
    key = tmp_path / "device.key"
    write_key(key, SigningKey.generate())
    key.chmod(0o644)
    with pytest.raises(HomeError, match="a key file must be its owner's only: run: chmod 600"):
        read_key(key)


def test_a_home_that_is_a_file_or_cannot_be_made_is_said_so(tmp_path: Path):
    """``init --home patient.key`` said "[Errno 17] File exists", and ``run --home`` a file
    told to ``iomtnode init`` it; a home that cannot be made names it."""
    afile = tmp_path / "patient.key"
    afile.write_text("{}")
    with pytest.raises(HomeError, match=r"patient.key is a file, not a directory"):
        init_home(afile)
    with pytest.raises(HomeError, match=r"patient.key is a file, not an iomtnode home"):
        Home(afile).check()
    with pytest.raises(HomeError, match=r"cannot make the home .*: Not a directory"):
        init_home(afile / "node")


def test_init_takes_over_only_a_new_or_empty_directory(tmp_path: Path):
    """``init --home ~`` made the user's home directory 0700 and wrote a node's files among
    theirs. A directory holding anything (but a volume's lost+found) is refused, untouched."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    theirs.chmod(0o755)
    (theirs / "notes.txt").write_text("mine")
    (theirs / "photos").mkdir()
    with pytest.raises(HomeError, match=r"theirs is not empty \(it holds 'notes.txt' and 1 "
                                        r"more\).*e\.g\. .*theirs/iomtnode"):
        init_home(theirs)
    assert mode(theirs) == 0o755 and sorted(p.name for p in theirs.iterdir()) == [
        "notes.txt", "photos"]
    volume = tmp_path / "volume"
    (volume / "lost+found").mkdir(parents=True)
    init_home(volume)  # a volume's root, and an empty directory, are fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert init_home(empty).is_initialized()
