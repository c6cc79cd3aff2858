#!/usr/bin/env bash
# One check of a lent CUDA GPU in under 8 minutes: bf16 matrix peak, the SwAV step of RegNetY-8GF and -32GF at
# SEER's crops (img/s, MFU), FSDP2 + bf16 + activation checkpointing in one process, torch.compile of the step,
# and a 200-step rehearsal of the seer-rg256gf preset scaled down (benchmarks/gpu_check.py says what each section does).
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options]     # e.g. --batch 32
#
# Python: $PYTHON, else the first of .venv/bin/python, python3, python. The last line is name=value figures.
# Without a CUDA GPU it prints a one-line explanation, then "gpu=none", and exits 0.
# Exit status: 0 every section ran; 1 a section failed; 2 no Python with torch; 124 it ran past 8 minutes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
  done
fi
if [ -z "$python" ] || ! "$python" -c "import torch" >/dev/null 2>&1; then
  echo "gpu_check: no Python that can import torch (set PYTHON=/path/to/python)"
  exit 2
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout 480 "$python" benchmarks/gpu_check.py "$@"
