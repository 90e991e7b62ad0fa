"""The benchmark scripts run: smallest sizes, figures printed, nothing about speed asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from highlightsense import openvino_separator

ROOT = Path(__file__).resolve().parent.parent


def test_compare_prints_its_table(tmp_path: Path) -> None:
    command = [
        sys.executable, str(ROOT / "benchmarks" / "compare.py"),
        "--minutes", "0.5", "--separator", "tiny", "--scratch", str(tmp_path), "--settle", "0",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("published: separate") for line in lines)
    assert any(line.startswith("ours: separate (model)") for line in lines)
    ratio = next(line for line in lines if line.startswith("ratio ours/published"))
    assert float(ratio.split()[-1]) > 0
    windows = next(line for line in lines if line.startswith("windows scored")).split()
    assert int(windows[-2]) >= 1 and int(windows[-1]) >= 1
    startup = next(line for line in lines if line.startswith("ours: start-up")).split()
    assert 0 < float(startup[-1]) < float(ratio.split()[-1]) * 1e9  # a number, not blank
    assert any(line.startswith("quiet pairs (load <= 1.5)") for line in lines)
    assert any(line.startswith("  tiny: ours/published") for line in lines)  # the summary


def test_captions_benchmark_prints_its_figures(tmp_path: Path) -> None:
    command = [
        sys.executable, str(ROOT / "benchmarks" / "captions.py"), "--sizes", "tiny",
        "--types", "int8", "--tokens", "5", "--burn-seconds", "2", "--scratch", str(tmp_path),
        "--separator", "tiny", "--clips", "2", "--vod-minutes", "1", "--caption-model", "tiny",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    row = next(line for line in lines if line.startswith("tiny    int8"))
    assert float(row.split()[2]) > 0 and float(row.split()[3]) > 0
    assert any(line.startswith("re-encode with captions drawn") for line in lines)
    assert any(line.startswith("captions of 2 x 30 s clips of a 1.") for line in lines)
    # step, then CPU s (wall s) separated again, then CPU s (wall s) with the voice kept
    rows = {line.split()[0]: [float(x) for x in re.findall(r"\d+\.\d+", line)]
            for line in lines if line.startswith(("voice ", "total "))}  # fmt: skip
    assert rows["voice"][0] > 0 and rows["total"][2] > 0  # both columns filled
    assert any(line.startswith("keeping the voice in the analysis:") for line in lines)


def test_export_benchmark_prints_its_tables(tmp_path: Path) -> None:
    # The runtimes come with the project where their wheels exist (onnxruntime with
    # faster-whisper). OpenVINO is looked for, not imported: importing it bare sends its telemetry
    # and writes under the home folder (highlightsense.openvino_separator imports it safely).
    pytest.importorskip("onnxruntime")
    if not openvino_separator.available():
        pytest.skip("OpenVINO is not installed (requirements.txt: x86-64 Linux and Windows)")
    command = [
        sys.executable, str(ROOT / "benchmarks" / "export.py"), "--separator", "tiny",
        "--repeats", "1", "--threads", "1", "--scratch", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("torch split vs torch forward: max |Δ| 0.00e+00") for line in lines)
    for runtime in ("torch bf16 autocast", "onnxruntime fp32", "openvino fp32", "openvino bf16"):
        row = next(line for line in lines if line.startswith(f"{runtime}  "))
        cpu_median = float(row[len(runtime) :].split()[3])
        assert cpu_median > 0
    assert any(line.startswith("openvino convert_model from torch:") for line in lines)
    assert any(line.startswith("two segments at once") for line in lines)
