#!/usr/bin/env bash
# The GPU check in one call: the CUDA equivalence tests (tests/test_cuda.py), then the GPU
# benchmark (benchmarks/gpu_check.py), every figure into one JSON file. About 8 minutes at most
# on one H100 or H200; installs nothing from outside: the Python packages the GPU machine lacks
# travel as wheels in .whl/ (benchmarks/gpu_wheels.sh fetches them, once, where pip can).
#
#   benchmarks/gpu_check.sh --out "$OUT/gpu_check.json"          # on the GPU machine
#   benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check.json  # anywhere: small sizes
#   HIGHLIGHTSENSE_DEVICE=cpu benchmarks/gpu_check.sh            # the same sizes on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
needed="import demucs, julius, librosa, soxr, yaml, safetensors, pytest, yt_dlp"
if ! "$python" -c "$needed" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "missing Python packages and no wheels in .whl/: run benchmarks/gpu_wheels.sh" >&2
        exit 2
    fi
    site=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
    trap 'rm -rf "$site"' EXIT
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    "$python" -c "$needed"
fi
if [[ " $* " == *" --dry-run "* ]]; then
    export HIGHLIGHTSENSE_DEVICE=${HIGHLIGHTSENSE_DEVICE:-$("$python" -c \
        'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
# 8 minutes on a GPU; a dry run on a busy CPU may need more (GPU_CHECK_TIMEOUT, seconds)
status=0
timeout "${GPU_CHECK_TIMEOUT:-480}" "$python" benchmarks/gpu_check.py "$@" || status=$?
exit "$status"  # (the trap removes the installed wheels)
