#!/usr/bin/env bash
# Creates .venv with the CPU build of torch and catp-blip2 (editable) with its test extra.
# An unpinned torch would pull a multi-GB CUDA build, so torch goes in first, pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[test]"
