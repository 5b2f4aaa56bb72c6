"""What the distribution says about itself holds: the license pyproject.toml declares is the
text in LICENSE, and the installed package's metadata carries both."""

from __future__ import annotations

import hashlib
import importlib.metadata
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
# SHA-256 of the Apache License 2.0 as www.apache.org/licenses/LICENSE-2.0.txt serves it
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_pyproject_declares_the_license_the_file_holds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License\n                           Version 2.0, January 2004" in text
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256  # the whole standard text


def test_the_installed_metadata_names_the_license_and_ships_its_file() -> None:
    meta = importlib.metadata.metadata("iomtnode")
    assert meta.get_all("License-Expression") == ["Apache-2.0"]
    assert meta.get_all("License-File") == ["LICENSE"]
    shipped = [f for f in importlib.metadata.files("iomtnode") or () if f.name == "LICENSE"]
    assert len(shipped) == 1
    assert shipped[0].read_text() == (ROOT / "LICENSE").read_text()
