"""What the CPU can do, and the policies that follow from it: the default precision and the C
allocator's settings.

Read once per process when first asked (never at import time).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
AMX_BF16 = "amx_bf16"  # Intel AMX tiles: bfloat16 matrix products many times fp32's rate
AVX512_BF16 = "avx512_bf16"  # bfloat16 dot products in AVX-512 registers
AMD = "AuthenticAMD"
# glibc mallopt parameters (malloc.h) and the values set for a run.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # bytes: blocks below this come from the heap, reused, not mmap'd fresh
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept rather than handed back after each free


def cpu_flags(cpuinfo: Path = CPUINFO) -> tuple[str, frozenset[str]]:
    """(vendor, flags) of the first processor in ``/proc/cpuinfo`` (empty where there is none)."""
    return _read_cpuinfo(cpuinfo)


@functools.lru_cache(maxsize=4)
def _read_cpuinfo(cpuinfo: Path) -> tuple[str, frozenset[str]]:
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux, or no /proc
        return "", frozenset()
    vendor, flags = "", frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "vendor_id" and not vendor:
            vendor = value.strip()
        elif name.strip() == "flags":
            flags = frozenset(value.split())
            break
    return vendor, flags


def fast_bf16(vendor: str, flags: frozenset[str]) -> bool:
    """Whether bfloat16 runs Demucs faster than float32 on this CPU.

    Intel AMX, yes. AVX512-BF16 alone: on AMD (Zen 4 and later) yes, ~1.9x; on Intel no: there
    its bf16 dot product has the throughput of the fp32 FMA it replaces, and autocast's casts
    and reorders made an htdemucs segment 1.3-1.5x slower (both in benchmarks/README.md).
    """
    return AMX_BF16 in flags or (AVX512_BF16 in flags and vendor == AMD)


def default_precision(device: str) -> str:
    """The separation precision when none is asked for: bf16 on CPUs where it is faster
    (:func:`fast_bf16`), fp32 elsewhere (GPUs keep fp32 unless asked: stems equal Demucs')."""
    return "bf16" if device == "cpu" and fast_bf16(*cpu_flags()) else "fp32"


@functools.cache
def tune_allocator() -> bool:
    """Keep big freed blocks in the C heap for reuse (glibc); True if it was done.

    glibc hands blocks above its mmap threshold (at most 32 MiB, raised as such blocks are
    freed) straight back to the system on free, and a new block of the same size is faulted in
    page by page: separation and scoring allocate and free activations of tens of MB per call,
    so a run spent a third of its CPU time in the kernel. A fixed 1 GiB threshold (and trim
    threshold) keeps them in the heap; the periodic ``malloc_trim`` still bounds the resident
    size. Measured on a 5 min input: system time 5.6 → 3.8 s, minor faults 1.49 M → 0.89 M,
    same peak RSS (benchmarks/README.md). Process-wide, so done once, when a run starts.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # another C library, or no dlopen(NULL)
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
