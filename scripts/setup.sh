#!/usr/bin/env bash
# Set up .venv with mbuild and every converter it drives (idempotent; reruns only when requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium renders report.html in tests (they skip without it); installed only as root with apt.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing chromium (apt-get) for the report.html rendering test"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; then
    echo "setup: warning: could not install chromium; the report rendering test will be skipped" >&2
  fi
fi
# The tfjs check runs in Node with @tensorflow/tfjs from the npm registry, installed into tools/tfjs (never
# globally) with the exact versions of its package-lock.json; without node/npm the tfjs check is skipped with the reason.
if command -v npm >/dev/null 2>&1; then
  npm_stamp=$(sha256sum tools/tfjs/package-lock.json | cut -c1-16)
  if [ "$(cat tools/tfjs/node_modules/.mbuild-setup 2>/dev/null)" != "$npm_stamp" ]; then
    echo "setup: installing the tfjs Node packages (npm ci in tools/tfjs)"
    (cd tools/tfjs && npm ci --no-audit --no-fund --loglevel=error >/dev/null) && echo "$npm_stamp" > tools/tfjs/node_modules/.mbuild-setup
  fi
else
  echo "setup: warning: npm not found; tfjs targets will be built but their check skipped (install Node 18+)" >&2
fi
PY=${PYTHON:-python3}
stamp_src=$(cat pyproject.toml requirements/constraints.txt requirements/onnx2tf.txt requirements/tfjs.txt 2>/dev/null | sha256sum | cut -c1-16)
compile_mbuild() {
  # Bytecode for mbuild itself (an editable install gets none): every build step and worker would otherwise
  # compile ~100 modules again, which is most of a no-op build where PYTHONDONTWRITEBYTECODE is set.
  .venv/bin/python -m compileall -q mbuild >/dev/null
}
if [ -f .venv/.mbuild-setup ] && [ "$(cat .venv/.mbuild-setup)" = "$stamp_src" ] && [ -x .venv/bin/doit ]; then
  compile_mbuild
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
# tensorflowjs requires tensorflow-decision-forests (TF <= 2.19) and flax; a SavedModel conversion needs neither.
if [ -f requirements/tfjs.txt ]; then
  .venv/bin/python -m pip install --quiet --no-deps -r requirements/tfjs.txt
fi
compile_mbuild
echo "$stamp_src" > .venv/.mbuild-setup
echo "setup: .venv ready ($(.venv/bin/python -c 'import mbuild; print("mbuild", mbuild.__version__)'))"
