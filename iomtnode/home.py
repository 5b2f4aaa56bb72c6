"""A node's home directory: everything a node needs, and nothing outside it.

Layout::

    config.toml    every setting, commented
    genesis.json   shared by all nodes of a network; its hash identifies the chain
    node_key       the node's (and, if it is one, the authority's) ed25519 seed, hex, mode 0600
    admin_token    the token admin API methods require, mode 0600
    signing_state  what this key signed last (consensus); ``init`` writes "nothing yet"
    consensus_wal  the blocks this key signs for at the height being decided
    signing.lock   held by the one process that may sign with this home
    data/          LevelDB (the chain: may be wiped and synced again; the three files
                   above stay, so a resync never makes the key forget what it signed)
    audit/         the node's audit log of reads of patients' records (iomtnode.audit.log);
                   never wiped: its anchors on the ledger would no longer match it

``init`` makes the home (and ``data/``) mode 0700 and the secret files 0600, whatever the
umask; the node checks at start that the home and its secret files are open to no other
user (no group or other permission bit), and refuses to start otherwise, naming the path,
the mode found and the ``chmod`` that fixes it.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config, load_config, render
from .consensus.signing import SIGNING_STATE_FILE, SigningStateFile, signing_record
from .consensus.votes import SigningState
from .core.crypto import SEED_BYTES, SigningKey
from .core.genesis import Genesis
from .store.files import write_atomic

SECRET_MODE = 0o600  # node_key, admin_token: the owner reads and writes, nobody else
HOME_MODE = 0o700  # the home and data/: the owner only (the chain names devices and patients)
PUBLIC_FILE_MODE = 0o666  # genesis.json: anyone the umask lets read it (the home is 0700)


class HomeError(RuntimeError):
    """A home directory that is missing, incomplete or unsafe (says what to do)."""


@dataclass(frozen=True, slots=True)
class Home:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def genesis_path(self) -> Path:
        return self.path / "genesis.json"

    @property
    def key_path(self) -> Path:
        return self.path / "node_key"

    @property
    def token_path(self) -> Path:
        return self.path / "admin_token"

    @property
    def data_path(self) -> Path:
        return self.path / "data"

    @property
    def audit_path(self) -> Path:
        return self.path / "audit"

    def is_initialized(self) -> bool:
        return self.key_path.exists() or self.genesis_path.exists()

    def check(self) -> None:
        """Raise :class:`HomeError` unless this is a complete home that no other user can
        open: the directory open to its owner only, the key and the admin token readable
        by their owner only (the node calls this before it reads anything)."""
        if self.path.exists() and not self.path.is_dir():
            raise HomeError(f"{self.path} is a file, not an iomtnode home (a directory)")
        if self.key_path.exists() and not self.genesis_path.exists():
            raise HomeError(f"{self.path} has no genesis.json yet; install the network's "
                            f"with: iomtnode genesis verify GENESIS_FILE --home {self.path} "
                            "--install (see docs/network.md)")
        for p in (self.config_path, self.genesis_path, self.key_path, self.token_path):
            if not p.exists():
                raise HomeError(f"{self.path} is not an iomtnode home ({p.name} missing); "
                                f"run: iomtnode init --home {self.path}")
        _check_private(self.path, HOME_MODE)
        _check_private(self.key_path)
        _check_private(self.token_path)

    def load_key(self) -> SigningKey:
        return _read_key(self.key_path)

    def load_genesis(self) -> Genesis:
        return Genesis.load(self.genesis_path)

    def save_genesis(self, genesis: Genesis) -> None:
        """Write ``genesis`` as this home's genesis.json, atomically (:func:`write_atomic`):
        a crash leaves the home as it was or with the whole file, never a torn one."""
        write_atomic(self.genesis_path, genesis.to_text().encode(), PUBLIC_FILE_MODE)

    def load_config(self, overrides: dict[str, object] | None = None) -> Config:
        return load_config(self.config_path, overrides)

    def admin_token(self) -> str:
        _check_private(self.token_path)
        return self.token_path.read_text().strip()


def _check_private(path: Path, fix: int = SECRET_MODE,
                   refusal: str = "the node refuses to start") -> None:
    """Raise :class:`HomeError` if ``path`` has any group or other permission bit; the
    message names the mode found, who refuses (``refusal``) and the ``chmod`` to ``fix`` it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise HomeError(f"{path} is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomeError(
            f"{path} is open to other users (mode {stat.S_IMODE(mode):04o}, "
            f"{stat.filemode(mode)}); {refusal}: run: chmod {fix:o} {path}"
        )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    os.fchmod(fd, SECRET_MODE)  # exactly, whatever the umask
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_key(path: Path) -> SigningKey:
    _check_private(path)
    return key_from_file(path)


def key_from_file(path: Path) -> SigningKey:
    """The key whose hex ed25519 seed ``path`` holds (whitespace around it ignored), as a
    home's ``node_key`` does; its mode is not checked (a key being imported, e.g. from a
    mounted Secret, often 0644). Raises :class:`HomeError` saying what is wrong."""
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise HomeError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise HomeError(f"{path} does not hold a hex ed25519 seed") from None
    if len(seed) != SEED_BYTES:
        raise HomeError(f"{path} must hold a {SEED_BYTES}-byte seed, holds {len(seed)}")
    return SigningKey(seed)


def write_key(path: Path, key: SigningKey) -> None:
    """Write a private key file (mode 0600); refuses to overwrite an existing one."""
    try:
        _write_private(path, key.seed.hex() + "\n")
    except FileExistsError:
        raise HomeError(f"{path} exists; refusing to overwrite a key") from None


def read_key(path: Path) -> SigningKey:
    """Read a private key file written by :func:`write_key` (must be mode 0600): a command's
    ``--key``, so the errors speak of the key file, not of a node."""
    if path.is_dir():
        raise HomeError(f"{path} is a directory, not a key file")
    _check_private(path, refusal="a key file must be its owner's only")
    return key_from_file(path)


HOME_MAY_HOLD = frozenset({"lost+found"})  # a volume's root may be a home: ext4's own entry


def _foreign_entries(path: Path) -> list[str]:
    """What ``path`` (a directory) holds that a new home would take over, sorted."""
    try:
        return sorted(e.name for e in path.iterdir() if e.name not in HOME_MAY_HOLD)
    except OSError as exc:
        raise HomeError(f"cannot read the directory {path}: {exc.strerror or exc}") from None


def init_home(
    path: Path,
    *,
    chain_id: str = "iomt-local",
    genesis: Genesis | None = None,
    key: SigningKey | None = None,
    config: Config | None = None,
    signed_before: bool = False,
    no_genesis: bool = False,
) -> Home:
    """Create a home. Without ``genesis``, a one-authority chain with this node as authority;
    with ``no_genesis``, no genesis.json at all (a future authority of a network whose genesis
    the ceremony makes: ``iomtnode genesis verify --install`` writes it later).

    The home's signing state says the key signed nothing yet: true of a key made here,
    and of a new ``key`` unless ``signed_before`` (a key moved from another home, whose
    record was lost: no signing state is written, and the node defers signing until it
    knows a height the key cannot have signed at; see docs/consensus.md)."""
    home = Home(path)
    if path.exists() and not path.is_dir():
        raise HomeError(f"{path} is a file, not a directory; pick a directory for the home")
    if home.is_initialized():
        raise HomeError(f"{path} is already an iomtnode home; pick another directory")
    if path.is_dir() and (others := _foreign_entries(path)):
        raise HomeError(
            f"{path} is not empty (it holds {others[0]!r}"
            f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}): init makes the "
            f"home open to its owner only (mode 0700) and writes its files there, so it must "
            f"be a new or empty directory; pick one, e.g. {path / 'iomtnode'}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(HOME_MODE)  # mkdir's mode is cut by the umask, and the directory may exist
    except OSError as exc:
        raise HomeError(f"cannot make the home {path}: {exc.strerror or exc}") from None
    key = key or SigningKey.generate()
    if genesis is None and not no_genesis:
        genesis = Genesis(chain_id=chain_id, time_ms=int(time.time() * 1000),
                          authorities=(key.public,), admission_threshold=1)
    write_key(home.key_path, key)
    _write_private(home.token_path, secrets.token_hex(16) + "\n")
    if genesis is not None:
        home.save_genesis(genesis)
    home.config_path.write_text(render(config or Config()))
    home.data_path.mkdir(mode=HOME_MODE, exist_ok=True)
    home.data_path.chmod(HOME_MODE)
    if not signed_before:
        SigningStateFile(home.path / SIGNING_STATE_FILE).put_meta(
            SIGNING_STATE_FILE, signing_record(key.public, SigningState()))
    return home
