#!/usr/bin/env bash
# Idempotent installer for the whole stack on a CPU machine (python 3.11).
#
#   bash tools/setup_env.sh            # install what is missing, then the plugin (editable)
#
# Why each pin: torch 2.14 headers need C++20 and mmcv 2.1.0's ops do not compile against them;
# mmdet 3.3.0 refuses mmcv >= 2.2; mmcv's setup.py and mmengine's `mmdet::` config lookup import
# pkg_resources, which setuptools >= 81 no longer ships. mmcv 2.1.0 is an sdist only: a prebuilt
# wheel (same recipe) is taken from $MMNORM_WHEELS (default ../shared/wheels) when present,
# otherwise pip compiles it (25-40 min on 2 cores).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
wheels=${MMNORM_WHEELS:-$here/../shared/wheels}
export PIP_ROOT_USER_ACTION=ignore
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

stamp=$(date +%s)
log() { echo "[setup_env +$(( $(date +%s) - stamp ))s] $*"; }

if "$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  log "torch 2.13.0 present"
else
  log "installing torch 2.13.0 (CPU)"
  pip_install "torch==2.13.0"
fi

pip_install "setuptools>=64,<81" wheel ninja "numpy<2.5" -r "$here/requirements/build.txt"

if "$PY" -c 'import mmcv, mmcv._ext, sys; sys.exit(mmcv.__version__ != "2.1.0")' 2>/dev/null; then
  log "mmcv 2.1.0 with compiled ops present"
else
  find_links=()
  if ls "$wheels"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "installing mmcv 2.1.0 from the prebuilt wheel in $wheels"
    find_links=(--find-links "$wheels")
  else
    log "no prebuilt mmcv wheel in $wheels: compiling mmcv 2.1.0 with ops (25-40 min)"
  fi
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    pip_install --no-build-isolation "${find_links[@]}" "mmcv==2.1.0" "mmengine==0.10.7"
  "$PY" -c 'import mmcv._ext' || { echo "mmcv installed without compiled ops" >&2; exit 1; }
fi

pip_install -r "$here/requirements/runtime.txt" -r "$here/requirements/tests.txt"
pip_install --no-build-isolation --no-deps -e "$here"
log "done: $("$PY" -c 'import torch, mmcv, mmengine, mmdet; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmengine", mmengine.__version__, "mmdet", mmdet.__version__)')"
