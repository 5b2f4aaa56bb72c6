"""A node process's interpreter settings (garbage collector, GIL switch interval)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iomtnode.node import GC_THRESHOLDS, GIL_SWITCH_INTERVAL_S


@pytest.mark.timeout(60)
def test_tune_interpreter_sets_the_collector_and_the_switch_interval():
    # in its own process: the settings are process-wide
    code = ("import gc, json, sys\n"
            "before = [sys.getswitchinterval(), gc.get_threshold()]\n"
            "from iomtnode.node import tune_interpreter\n"
            "tune_interpreter()\n"
            "print(json.dumps([before, [sys.getswitchinterval(), gc.get_threshold(),"
            " gc.get_freeze_count() > 0]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=50, check=True).stdout
    before, after = json.loads(out)
    assert before[0] == pytest.approx(0.005)  # CPython's default, changed
    assert after == [pytest.approx(GIL_SWITCH_INTERVAL_S), list(GC_THRESHOLDS), True]
    assert before[0] < GIL_SWITCH_INTERVAL_S
