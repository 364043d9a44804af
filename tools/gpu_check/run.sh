#!/usr/bin/env bash
# make gpu-check: the GPU check of every norm (docs/gpu_check.md).
#
#   bash tools/gpu_check/run.sh            # cuda when torch sees one; DEVICE=cpu for the CPU
#
# 1. Python: $PYTHON if set; else the project's .venv when present (tools/python_env.sh, as
#    `make test` does); else the `python3` on PATH (a machine that has torch but no venv).
# 2. Wheels: when mmengine/mmcv/mmdet do not import and $GPU_CHECK_WHEELS (default .whl, made
#    by `make gpu-wheels`) exists, they are installed with --no-index --no-deps into the
#    private target $GPU_CHECK_SITE (default /tmp/mmnorm-gpu-site), put first on PYTHONPATH;
#    nothing is installed into the interpreter itself. GPU_CHECK_INSTALL=always|never.
# 3. The check: tools/gpu_check/gpu_check.py "$@" (e.g. --budget 300 --parts correctness,amp),
#    with the plugin from this checkout (PYTHONPATH=$PWD). JSON, table and log go to $OUT when
#    set, else work_dirs/gpu_check.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
if [ -n "${PYTHON:-}" ] || [ -x .venv/bin/python ]; then
  source tools/python_env.sh
else
  PY=python3  # never creates a venv: without network nothing could be installed in it
fi
wheels=${GPU_CHECK_WHEELS:-.whl}
site=${GPU_CHECK_SITE:-/tmp/mmnorm-gpu-site}
install=${GPU_CHECK_INSTALL:-auto}
out=${OUT:-$root/work_dirs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "${DEVICE:-}" = cpu ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi

have_stack() { "$PY" -c 'import mmengine, mmcv, mmdet' >/dev/null 2>&1; }
if [ "$install" = always ] || { [ "$install" = auto ] && ! have_stack; }; then
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "[gpu-check] mmengine/mmcv/mmdet missing and no wheels in $wheels (make gpu-wheels)" >&2
    exit 2
  fi
  echo "[gpu-check] installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site"
  rm -rf "$site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$wheels"/*.whl || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
echo "[gpu-check] python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
if [ "${DEVICE:-}" != cpu ] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
fi
"$PY" tools/gpu_check/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
