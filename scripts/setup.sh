#!/usr/bin/env bash
# Creates .venv with the CPU build of torch and catp-blip2 (editable) with its test extra.
# An unpinned torch would pull a multi-GB CUDA build, so torch goes in first, pinned.
#
#   bash scripts/setup.sh                    # the package and its tests
#   bash scripts/setup.sh --with-lmms-eval   # also the lmms-eval extra (python -m lmms_eval --model catp_blip2)
#   bash scripts/setup.sh --with-docs        # also the docs extra (.venv/bin/mkdocs build --strict); combinable
#
# --with-lmms-eval (measured on the 2-core CPU machines: about 70 s and 0.9 GB more in .venv): torch is pinned in
# the same pip command as lmms-eval, or pip replaces it with a CUDA build and 18 CUDA packages; then torchvision,
# which lmms-eval pulls and whose PyPI wheels are CUDA builds that fail to import against the CPU torch, is removed
# (lmms-eval's VQA tasks run without it). filelock stays below 4 (4.x breaks lmms-eval 0.7.3).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_LMMS_EVAL=0
EXTRAS=test
for arg in "$@"; do
    case "$arg" in
        --with-lmms-eval) WITH_LMMS_EVAL=1; EXTRAS="$EXTRAS,lmms-eval" ;;
        --with-docs) EXTRAS="$EXTRAS,docs" ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "scripts/setup.sh: error: unknown option '$arg' (known: --with-lmms-eval, --with-docs)" >&2; exit 2 ;;
    esac
done
PYTHON=${PYTHON:-python3}
TORCH="torch==${TORCH_VERSION:-2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH"
if [ "$WITH_LMMS_EVAL" = 1 ]; then
    .venv/bin/python -m pip install --quiet "$TORCH" "lmms-eval==${LMMS_EVAL_VERSION:-0.7.3}" -e ".[$EXTRAS]"
    if .venv/bin/python -m pip show --quiet torchvision >/dev/null 2>&1; then
        .venv/bin/python -m pip uninstall --quiet -y torchvision
    fi
else
    .venv/bin/python -m pip install --quiet "$TORCH" -e ".[$EXTRAS]"
fi
