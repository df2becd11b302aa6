#!/usr/bin/env bash
# The device command of issue 15, run unchanged on the GPU machine, from the repo root:
#   bash benchmarks/accelerator.sh [more benchmarks.accelerator flags]
# Before, here: bash benchmarks/accelerator_wheels.sh (fills .whl/, which the device
# tool must carry). Writes to $OUT (the device tool's return folder; out/accelerator
# elsewhere): accelerator.json (rewritten after every point), accelerator_inference.json
# (benchmarks.run's inference part), accelerator.log (all output), nvidia-smi.txt.
# Exit status: the benchmark's (3: its watchdog stopped it at --budget_s; the JSON
# still holds every point measured until then).
set -uo pipefail
OUT=${OUT:-out/accelerator}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
if compgen -G '.whl/*.whl' > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${DASL_ASSETS:-}" ] && [ -d .whl/assets/bfm/keypoints68 ]; then
  export DASL_ASSETS=$PWD/.whl/assets
fi
export PYTHONUNBUFFERED=1
# JAX takes 75% of GPU memory by default; the sweep looks for the batch that fills it.
# Not all: cuDNN and cuBLAS workspaces live outside JAX's pool.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
if command -v nvidia-smi > /dev/null; then nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1; fi
"$PY" -m benchmarks.accelerator --json="$OUT/accelerator.json" "$@" 2>&1 \
  | tee "$OUT/accelerator.log"
