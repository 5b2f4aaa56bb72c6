"""A node process's settings (garbage collector, GIL switch interval, C allocator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iomtnode.tuning import GC_THRESHOLDS, GIL_SWITCH_INTERVAL_S, MALLOC_MMAP_THRESHOLD_BYTES

# In a fresh process each: the settings are process-wide. The allocator check asks glibc
# (mallinfo2, glibc >= 2.33) how many blocks it has mapped while a block of 2 MiB is alive,
# after a 4 MiB block was freed: by default glibc then raises its threshold to 4 MiB and
# serves the 2 MiB from the heap; with the threshold fixed at 1 MiB it maps it.
ALLOCATOR_PROBE = """
import ctypes, json, sys
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print(json.dumps(None)); sys.exit()
libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    from iomtnode.tuning import fix_mmap_threshold, tune_process
    tune_process()
    assert fix_mmap_threshold(1024 * 1024) is None, "glibc's mallopt refused"
big = bytearray(4 * 1024 * 1024)
del big
before = libc.mallinfo2().hblks
block = bytearray(2 * 1024 * 1024)
print(json.dumps(libc.mallinfo2().hblks - before))
"""


# what would change the allocator's defaults under the probe (not the code under test)
ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
                 "LD_PRELOAD", "PYTHONMALLOC")


def _run(code: str, *args: str) -> object:
    """Run ``code`` in a fresh interpreter; the JSON on its last line of stdout (a log line
    may come before it where the allocator cannot be tuned)."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                         text=True, timeout=50, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(60)
def test_tune_process_sets_the_collector_and_the_switch_interval():
    code = ("import gc, json, sys\n"
            "before = [sys.getswitchinterval(), gc.get_threshold()]\n"
            "from iomtnode.tuning import tune_process\n"
            "tune_process()\n"
            "print(json.dumps([before, [sys.getswitchinterval(), gc.get_threshold(),"
            " gc.get_freeze_count() > 0]]))")
    before, after = _run(code)
    assert before[0] == pytest.approx(0.005)  # CPython's default, changed
    assert after == [pytest.approx(GIL_SWITCH_INTERVAL_S), list(GC_THRESHOLDS), True]
    assert before[0] < GIL_SWITCH_INTERVAL_S


@pytest.mark.timeout(60)
def test_tune_process_fixes_the_mmap_threshold_so_large_blocks_are_mapped():
    default = _run(ALLOCATOR_PROBE, "default")
    if default is None:
        pytest.skip("not glibc >= 2.33 (no mallinfo2)")
    assert MALLOC_MMAP_THRESHOLD_BYTES <= 2 * 1024 * 1024
    assert default == 0  # glibc raised its threshold: the 2 MiB came from the heap
    assert _run(ALLOCATOR_PROBE, "tuned") == 1  # mapped: unmapped again when freed


class _Libc:
    def __init__(self, answer: int | None) -> None:
        if answer is not None:
            self.mallopt = _Mallopt(answer)


class _Mallopt:
    def __init__(self, answer: int) -> None:
        self.answer = answer
        self.calls: list[tuple[int, int]] = []

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


@pytest.mark.parametrize(("answer", "why"), [
    (None, "the C library has no mallopt (AttributeError)"),  # musl, macOS
    (0, "the C library's mallopt refused M_MMAP_THRESHOLD"),
])
def test_fix_mmap_threshold_says_why_not_where_the_c_library_is_not_glibc(
        monkeypatch, answer, why):
    from iomtnode import tuning

    libc = _Libc(answer)
    monkeypatch.setattr(tuning.ctypes, "CDLL", lambda name: libc)
    assert tuning.fix_mmap_threshold(MALLOC_MMAP_THRESHOLD_BYTES) == why
    if answer is not None:
        assert libc.mallopt.calls == [(-3, MALLOC_MMAP_THRESHOLD_BYTES)]  # M_MMAP_THRESHOLD
