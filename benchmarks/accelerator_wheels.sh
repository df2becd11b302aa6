#!/usr/bin/env bash
# Here, where pip reaches a package index: put into .whl/ (git-ignored) what the GPU
# machine lacks for benchmarks/accelerator.sh, which installs it there. Run from
# anywhere in the checkout:  bash benchmarks/accelerator_wheels.sh
#
# What the GPU image lacks (device tool's KINDS.md, package list of 2026-11-17):
# ml-collections. Its own needs (absl-py, PyYAML) are there. The benchmark's import
# chain (benchmarks.accelerator -> dasl_jax.training.loop, benchmarks.run for the
# inference part) loads no grain, tensorflow-datasets or tensorboardX, so none of those
# travels. The wheel is pure Python, so the python-version/platform options only make
# pip pick what Python 3.12 on x86-64 would.
#
# Also copied: $DASL_ASSETS/bfm/keypoints68 (116 KB), the recipe's 68-landmark model,
# so the device's FakeData uses the same model and whitening as training on 300W-LP
# would (without it, FakeData falls back to a random model of the same kind).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-python3}
version() {  # the pinned version in requirements.txt
  sed -n "s/^$1==\([^ #]*\).*/\1/p" requirements.txt
}
mkdir -p .whl
# One version of each package: two of the same stop the whole install there.
rm -f .whl/*.whl
for pkg in ml-collections; do
  v=$(version "$pkg")
  if [ -z "$v" ]; then echo "error: $pkg is not pinned in requirements.txt" >&2; exit 2; fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$pkg==$v"
done
assets=${DASL_ASSETS:-$(cd .. && pwd)/shared/assets}
if [ -f "$assets/bfm/keypoints68/u_base.txt" ]; then
  rm -rf .whl/assets && mkdir -p .whl/assets/bfm
  cp -r "$assets/bfm/keypoints68" .whl/assets/bfm/
else
  echo "warning: no $assets/bfm/keypoints68: the device run will use FakeData's random model" >&2
fi
ls -l .whl
du -sh .whl
