"""benchmarks/gpu_check.sh runs end to end without a GPU (``--dry-run`` on the CPU), so the one
call prepared for a lent GPU cannot rot: its tests run, its benchmark runs, its JSON has every
figure, and the ZeroGPU planner reads that JSON's ``zerogpu`` block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from highlightsense.web import zerogpu

ROOT = Path(__file__).resolve().parent.parent
CUDA_TESTS = 9  # tests/test_cuda.py's test cases, parameters included
CPU_SKIPS = 2  # its float16 cases: float16 autocast is for GPUs


def test_the_dry_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "HIGHLIGHTSENSE_DEVICE": "cpu", "PYTHON": sys.executable,
           "GPU_CHECK_TIMEOUT": "1500"}  # fmt: skip
    command = [str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out),
               "--scratch", str(tmp_path / "scratch")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["environment"]["device"] == "cpu"

    tests = report["tests"]
    assert (tests["returncode"], tests["failures"], tests["errors"]) == (0, 0, 0)
    assert (tests["tests"], tests["skipped"]) == (CUDA_TESTS, CPU_SKIPS)
    figures = tests["figures"]
    same = ("crnn_logit", "features", "stems_tiny", "slice_probability")
    for name in same:  # the CPU on both sides: the same computation
        (value,) = (v for k, v in figures.items() if k.startswith(name + "_"))
        assert value == 0.0
    assert 0 < figures["crnn_bf16_prob_max_abs_diff"] <= 0.02
    assert 0 < figures["stems_bf16_relative_error"] <= 0.05

    runs = report["runs"]
    assert [run["audio_sec"] for run in runs] == [3.0, 5.7]
    for run in runs:
        assert set(run["seconds"]) == {"separate (model)", "separate+features", "score"}
        assert run["seconds"]["separate (model)"] <= run["seconds"]["separate+features"]
        assert run["realtime_factor"] > 0 and run["windows"] == 1  # shorter than one window
        assert run["peak_gpu_mib"] is None and run["peak_rss_mib"] > 100

    block = report["zerogpu"]
    path = tmp_path / "gpu_speed.json"
    path.write_text(json.dumps({"zerogpu": block}))
    speed = zerogpu.gpu_speed(path)
    assert speed.source == "measured on cpu" and speed.overhead == block["overhead_s"]
    longest = runs[-1]
    assert speed.separate == (
        longest["seconds"]["separate+features"] / 5.7 + block["decode_s_per_vod_s_assumed"]
    )
