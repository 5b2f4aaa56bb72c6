"""The container image's recipe: hadolint finds nothing in the Dockerfile, shellcheck nothing
in the entrypoint, and the properties deploy/README.md promises hold (non-root with a fixed
uid, the home a volume, the three ports, a readiness healthcheck, no secret in a layer). No
Docker engine runs here; the entrypoint itself runs in tests/deploy/test_entrypoint.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .tools import DEPLOY, ROOT, tool, unknown_iomtnode_variables

DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
LINT_TIMEOUT_S = 60


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    # style is the lowest severity: any finding at all fails
    return subprocess.run([tool("hadolint"), "--no-color", "--failure-threshold", "style",
                           str(path)], capture_output=True, text=True, timeout=LINT_TIMEOUT_S)


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


def test_the_dockerfile_is_hadolint_clean():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_fails_on_a_finding(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_the_entrypoint_is_posix_sh_and_shellcheck_clean():
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert ENTRYPOINT.stat().st_mode & 0o111, "the entrypoint must be executable (git keeps +x)"
    result = subprocess.run([tool("shellcheck"), "--shell=sh", "--severity=style",
                             str(ENTRYPOINT)], capture_output=True, text=True,
                            timeout=LINT_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_fixed_non_root_uid_with_its_home_a_volume():
    steps = instructions(DOCKERFILE.read_text())
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build"), "multi-stage: build, runtime"
    for image in froms:
        name = image.split()[0]
        assert ":" in name and not name.endswith(":latest"), f"{name}: pin the tag"
    runtime = steps[[k for k, _ in steps].index("FROM", 1):]
    assert ("COPY", "--from=build /opt/iomtnode/venv /opt/iomtnode/venv") in runtime
    assert [args for keyword, args in runtime if keyword == "USER"] == ["10001:10001"]
    assert ("VOLUME", '["/var/lib/iomtnode"]') in runtime
    assert ("EXPOSE", "7545 7546 9464") in runtime
    healthcheck = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and healthcheck[0].endswith(
        'CMD ["iomtnode", "status", "--ready"]')
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    for setting in ("IOMTNODE_P2P_LISTEN=0.0.0.0:7546", "IOMTNODE_API_LISTEN=0.0.0.0:7545",
                    "IOMTNODE_METRICS_LISTEN=0.0.0.0:9464",
                    "IOMTNODE_HOME=/var/lib/iomtnode/node"):
        assert setting in env
    assert unknown_iomtnode_variables(re.findall(r"(IOMTNODE_\w+)=", env)) == set()


def test_no_secret_goes_into_a_layer():
    steps = instructions(DOCKERFILE.read_text())
    for keyword, args in steps:
        if keyword in ("ARG", "ENV", "LABEL"):
            assert not re.search(r"(KEY|TOKEN|PASSWORD|SECRET)\w*=", args.upper()), args
        if keyword in ("COPY", "ADD"):
            assert "node_key" not in args and "admin_token" not in args and "localnet" not in args
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    # deny everything, then allow the build's inputs: no home, key or venv can slip in
    assert next(line for line in ignored if line and not line.startswith("#")) == "*"
    allowed = {line[1:] for line in ignored if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "LICENSE*", "iomtnode/",
                       "deploy/docker/entrypoint.sh"}
