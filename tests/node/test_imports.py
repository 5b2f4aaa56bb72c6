"""What a running node imports (imports are 35 MB of a holding node's Python
objects). The FHIR models (fhir.resources, pydantic) are for ``iomtnode patient fhir``, never
for a node; each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

SUBPROCESS_TIMEOUT_S = 60
NOT_FOR_A_NODE = ("fhir", "fhir_core", "pydantic", "pydantic_core")

_LOADED = """
import json, sys
import iomtnode.cli, iomtnode.node.node, iomtnode.node.services
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_cli_and_the_node_do_not_import_the_fhir_models() -> None:
    done = subprocess.run([sys.executable, "-c", _LOADED], check=True, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)
    loaded = set(json.loads(done.stdout))
    assert "iomtnode" in loaded and "plyvel" in loaded
    assert loaded.isdisjoint(NOT_FOR_A_NODE)
