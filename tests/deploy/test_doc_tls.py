"""The TLS steps of docs/api.md, run as written in a fresh home: they make the certificate and
key the node loads."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

from iomtnode.home import init_home

from .test_doc_commands import _PROGRAM, _blocks, _lines
from .tools import ROOT


def test_the_self_signed_certificate_steps_run_in_a_new_home(tmp_path):
    # `init` makes no tls/ directory, and openssl does not make one: the steps failed with
    # 'Can't open "node1/tls/api.key" for writing' until they made it first
    if shutil.which("openssl") is None:
        pytest.skip("no openssl here")
    init_home(tmp_path / "node1")
    [block] = [b for b in _blocks((ROOT / "docs" / "api.md").read_text()) if "openssl" in b]
    for line in _lines(block):
        if _PROGRAM.match(line) is None:  # the node's own commands need a running node
            subprocess.run(line, shell=True, cwd=tmp_path, check=True, timeout=60,
                           capture_output=True)
    tls = tmp_path / "node1" / "tls"
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tls / "api.crt", tls / "api.key")
