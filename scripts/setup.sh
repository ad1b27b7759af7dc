#!/usr/bin/env bash
# Set up .venv with mbuild and every converter it drives (idempotent; reruns only when requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp_src=$(cat pyproject.toml requirements/constraints.txt requirements/onnx2tf.txt 2>/dev/null | sha256sum | cut -c1-16)
if [ -f .venv/.mbuild-setup ] && [ "$(cat .venv/.mbuild-setup)" = "$stamp_src" ] && [ -x .venv/bin/doit ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip wheel setuptools
# torch is pinned exactly: a looser spec would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e ".[all,test]"
# onnx2tf pins old numpy/onnx/TF releases; it works with ours when installed without its dependency pins.
if [ -f requirements/onnx2tf.txt ]; then
  .venv/bin/python -m pip install --quiet --no-deps -r requirements/onnx2tf.txt
fi
echo "$stamp_src" > .venv/.mbuild-setup
echo "setup: .venv ready ($(.venv/bin/python -c 'import mbuild; print("mbuild", mbuild.__version__)'))"
