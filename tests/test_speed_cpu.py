"""The CPU policies: which CPUs get bf16 by default, and reading /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from highlightsense import cpu
from highlightsense.engine import Engine
from highlightsense.settings import AnalysisSettings

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 {extra}

processor\t: 1
vendor_id\t: {vendor}
flags\t\t: fpu
"""


@pytest.mark.parametrize(
    ("vendor", "extra", "fast"),
    [
        ("GenuineIntel", "avx512f amx_bf16 amx_tile avx512_bf16", True),
        ("GenuineIntel", "avx512f avx512_bf16", False),  # measured slower (benchmarks/README.md)
        ("AuthenticAMD", "avx512f avx512_bf16", True),
        ("AuthenticAMD", "avx512f", False),
        ("GenuineIntel", "", False),
    ],
)
def test_bf16_only_where_it_is_faster(tmp_path: Path, vendor: str, extra: str, fast: bool):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(vendor=vendor, extra=extra))
    read_vendor, flags = cpu.cpu_flags(info)
    assert read_vendor == vendor
    assert flags == frozenset(["fpu", "sse2", "avx2", *extra.split()])
    assert cpu.fast_bf16(read_vendor, flags) is fast


def test_no_cpuinfo_means_fp32(tmp_path: Path):
    assert cpu.cpu_flags(tmp_path / "missing") == ("", frozenset())
    assert not cpu.fast_bf16(*cpu.cpu_flags(tmp_path / "missing"))


def test_explicit_precision_wins_over_auto(monkeypatch: pytest.MonkeyPatch):
    def precision(device: str, **values: str) -> str:
        return Engine.create(AnalysisSettings(**values), device=device).precision

    monkeypatch.setattr(cpu, "cpu_flags", lambda: ("AuthenticAMD", frozenset({"avx512_bf16"})))
    assert precision("cpu") == "bf16"
    assert precision("cpu", precision="fp32") == "fp32"
    assert precision("cuda:0") == "fp32"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: ("GenuineIntel", frozenset({"avx512_bf16"})))
    assert precision("cpu") == "fp32"
    assert precision("cpu", precision="bf16") == "bf16"


def test_allocator_keeps_big_freed_blocks():
    """After tuning, a freed 64 MiB block is reused: allocating it again faults no new pages."""
    import resource

    import numpy as np

    if not cpu.tune_allocator():
        pytest.skip("not glibc")

    def faults_of_one_buffer() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = np.ones(1 << 23)  # 64 MiB of float64, written
        del buffer
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_one_buffer()
    # a fresh mapping faults every page again: 16 384 (4 KiB pages), ~540 with huge pages
    assert faults_of_one_buffer() <= 8
