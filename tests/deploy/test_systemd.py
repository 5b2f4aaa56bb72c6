"""deploy/iomtnode.service: `systemd-analyze verify` accepts it and `systemd-analyze security`
rates its sandbox OK (both skipped where systemd-analyze is missing), and it keeps what
deploy/README.md's install steps rely on: the state directory is the node's home's parent,
the node runs from the virtual environment at a fixed path, as its own user.

verify checks that ExecStart's program exists, and /opt/iomtnode/venv/bin/iomtnode exists only
on an installed host: the test verifies a copy of the unit whose ExecStart names this virtual
environment's `iomtnode` instead, the one change."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .tools import DEPLOY

UNIT = DEPLOY / "iomtnode.service"
VENV_IOMTNODE = "/opt/iomtnode/venv/bin/iomtnode"
HOME = "/var/lib/iomtnode/node"
ANALYZE = shutil.which("systemd-analyze")
ANALYZE_TIMEOUT_S = 60
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked) .. 10 (exposed); 2 or less is "OK"
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def installed_copy(tmp_path: Path, text: str) -> Path:
    here = Path(sys.executable).parent / "iomtnode"
    assert here.exists()
    unit = tmp_path / "iomtnode.service"
    unit.write_text(text.replace(VENV_IOMTNODE, str(here)))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=ANALYZE_TIMEOUT_S)


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    result = verify(installed_copy(tmp_path, UNIT.read_text()))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_analyze
def test_verify_reports_a_misspelt_directive(tmp_path: Path):
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    result = verify(installed_copy(tmp_path, text))
    assert "ProtectSytem" in result.stderr


@needs_analyze
def test_the_sandbox_is_rated_ok(tmp_path: Path):
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager",
                             str(installed_copy(tmp_path, UNIT.read_text()))],
                            capture_output=True, text=True, timeout=ANALYZE_TIMEOUT_S)
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_unit_runs_the_venv_node_in_its_state_directory_as_its_user():
    found = directives(UNIT.read_text())
    assert found["StateDirectory"] == ["iomtnode"] and found["StateDirectoryMode"] == ["0700"]
    assert found["ExecStart"] == [f"{VENV_IOMTNODE} --log-json run --home {HOME}"]
    assert HOME.startswith("/var/lib/" + found["StateDirectory"][0] + "/")
    assert found["User"] == ["iomtnode"] and "DynamicUser" not in found
    assert "ReadWritePaths" not in found  # the state directory is the only writable place
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes",
                       "PrivateTmp": "yes", "ProtectHome": "yes",
                       "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                       "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
                       "CapabilityBoundingSet": "", "UMask": "0077"}.items():
        assert found[key] == [value], key
    assert found["SystemCallFilter"][0] == "@system-service"


def test_the_install_steps_use_the_units_paths():
    readme = (DEPLOY / "README.md").read_text()
    steps = readme[readme.index("## systemd"):readme.index("## Docker")]
    venv = VENV_IOMTNODE.removesuffix("/bin/iomtnode")
    assert f"python3 -m venv --system-site-packages {venv}" in steps
    assert f"sudo -u iomtnode {VENV_IOMTNODE} init --home {HOME}" in steps
    assert "--home-dir /var/lib/iomtnode" in steps
    assert "install -m 0644 deploy/iomtnode.service /etc/systemd/system/" in steps
