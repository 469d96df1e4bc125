#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a GPU machine from the repository root and keep the full log:
#   benchmarks/gpu_check.sh [extra gpu_check.py args]      (PYTHON=python3 by default)
# The log goes to $OUT/gpu_check.log when $OUT is set, else to ./gpu_check.log. Exit status = the script's.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
log="${OUT:-.}/gpu_check.log"
PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false "${PYTHON:-python3}" benchmarks/gpu_check.py --device cuda "$@" \
    2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
