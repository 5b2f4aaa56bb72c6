"""Settings for a node's OS process, made once everything is imported and before it runs:
the garbage collector, the GIL switch interval and the C allocator (:func:`tune_process`).
They are process-wide, so only ``iomtnode run`` makes them, not the library."""

from __future__ import annotations

import ctypes
import gc
import sys

import structlog

log = structlog.get_logger(__name__)

# The node process's garbage collector: a young generation of 10,000 net new containers
# instead of 700. Nearly everything a node allocates (decoded transactions, messages) dies
# young by reference counting; with the default thresholds the collector took 4-7% of a
# benchmark node's CPU, with full collections of 100-250 ms.
GC_THRESHOLDS = (10_000, 10, 10)
# How long the trio thread may run Python before a verifying thread that wants the GIL back
# forces a switch: 20 ms instead of CPython's 5 ms. The verifying threads hold the GIL only
# between two signatures (libsodium releases it), so a forced switch buys them little and
# costs the trio thread, which runs consensus and the network, a handoff each time. In ten
# alternating traffic runs of a 4-node localnet at saturation (5 each), the slowest node
# committed 2,974-3,740 readings/s (median 3,453) against 2,325-3,234 (median 2,643) at
# 5 ms; in eight alternating `bench --saturate` runs, no difference (medians 2,813 and
# 2,832). Latency at 1,000/s did not move; 0.5 ms was worse (docs/performance.md).
GIL_SWITCH_INTERVAL_S = 0.02
# glibc's malloc serves a block of this many bytes or more from its own mapping, returned
# to the system when freed. Left alone, glibc raises that threshold (up to 32 MiB) to the
# size of every mapped block freed, so after the first 4 MiB message is freed, the next
# ones come from the heap, which keeps its high-water mark: a node syncing a chain of
# 1,000,000 readings peaked at 189.5-194.3 MB of RSS in seven runs, and at 163.3-170.3 MB
# in six with the threshold fixed at 1 MiB, syncing as fast (docs/performance.md). Fixing
# the threshold also fixes the heap's trim threshold (128 KiB), so freed memory goes back
# sooner. (With another allocator preloaded, jemalloc or tcmalloc, glibc's mallopt still
# answers but changes nothing that allocator does.)
MALLOC_MMAP_THRESHOLD_BYTES = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def tune_process() -> None:
    """What is loaded by now is never scanned by the collector again, whose young
    generation is larger (:data:`GC_THRESHOLDS`); the GIL switch interval is longer
    (:data:`GIL_SWITCH_INTERVAL_S`); glibc's mmap threshold is fixed
    (:data:`MALLOC_MMAP_THRESHOLD_BYTES`; elsewhere than glibc, logged and left)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    why_not = fix_mmap_threshold(MALLOC_MMAP_THRESHOLD_BYTES)
    if why_not is None:
        log.debug("malloc_mmap_threshold_set", bytes=MALLOC_MMAP_THRESHOLD_BYTES)
    else:
        log.info("malloc_mmap_threshold_not_set", reason=why_not)


def fix_mmap_threshold(size: int) -> str | None:
    """Fix glibc malloc's mmap threshold at ``size`` bytes; None once done, else why not
    (the C library is not glibc: it has no ``mallopt``, or its ``mallopt`` refused)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError) as exc:  # TypeError: CDLL(None) on Windows
        return f"the C library has no mallopt ({type(exc).__name__})"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, size) != 1:
        return "the C library's mallopt refused M_MMAP_THRESHOLD"
    return None
