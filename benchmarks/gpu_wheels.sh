#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh needs on a GPU machine that has PyTorch (2.11, Python 3.12,
# as the device image and the Space have) but not these, fetched into .whl/ (ignored by git)
# where pip can reach PyPI. Pinned as requirements.txt pins them; their own dependencies that
# such an image lacks are named too (each with --no-deps: one version of everything).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=(
    demucs==4.1.0 julius==0.2.8 librosa==0.11.0 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0
    soundfile==0.14.0 decorator==5.3.2 platformdirs==4.14.9 yt-dlp==2026.10.26
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${wheels[@]}"
ls -la .whl
