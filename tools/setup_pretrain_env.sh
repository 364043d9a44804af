#!/usr/bin/env bash
# A second environment for the mmpretrain tests, where the main one cannot import mmpretrain.
#
#   bash tools/setup_pretrain_env.sh        # creates/updates .venv-pretrain (MMNORM_PRETRAIN_VENV)
#
# Why a second one: mmpretrain imports torchvision, which must be the build of the installed
# torch. Next to the pinned CPU torch 2.13.0 only a torchvision 0.28.0+cpu works, and where
# pip's sources have none (this project's CI machine: PyPI's 0.28.0 is a CUDA build and PyTorch's
# CPU index is out of reach), `make install` leaves mmpretrain unimportable. This environment
# takes the newest matching pair pip's sources do have (PRETRAIN_TORCH / PRETRAIN_TORCHVISION,
# default 2.14.1 / 0.29.1, ~6 GB: a CUDA build, run on the CPU) and the same prebuilt mmcv 2.1.0
# wheel: its compiled ops load next to torch 2.14.1 (they only fail to *compile* against its
# headers). tools/run_tests.sh runs the mmpretrain tests here after the main suite; a user who
# has a matching torchvision in the main environment never needs it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MMNORM_PRETRAIN_VENV:-$here/.venv-pretrain}
wheels=${MMNORM_WHEELS:-$here/../shared/wheels}
torch_version=${PRETRAIN_TORCH:-2.14.1}
tv_version=${PRETRAIN_TORCHVISION:-0.29.1}
export PIP_ROOT_USER_ACTION=ignore
stamp=$(date +%s)
log() { echo "[setup_pretrain_env +$(( $(date +%s) - stamp ))s] $*"; }

[ -x "$venv/bin/python" ] || { log "creating $venv"; python3 -m venv "$venv"; }
PY=$venv/bin/python
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if "$PY" - "$torch_version" "$tv_version" <<'PY' 2>/dev/null
import sys, torch, torchvision
from torchvision.ops import nms  # noqa: F401  (fails where torchvision is another build)
sys.exit(torch.__version__.split('+')[0] != sys.argv[1]
         or torchvision.__version__.split('+')[0] != sys.argv[2])
PY
then
  log "torch $torch_version + torchvision $tv_version present"
else
  log "installing torch $torch_version + torchvision $tv_version"
  pip_install "torch==$torch_version" "torchvision==$tv_version"
fi
find_links=()
[ -d "$wheels" ] && find_links=(--find-links "$wheels")
# no build isolation and setuptools < 81: mmcv's and mmengine's setup import pkg_resources
pip_install "setuptools>=64,<81" wheel
pip_install --no-build-isolation "${find_links[@]}" "mmcv==2.1.0" "mmengine==0.10.7" "mmdet==3.3.0" \
  pycocotools matplotlib -r "$here/requirements/tests.txt" -r "$here/requirements/pretrain.txt"
"$PY" -c 'import mmcv._ext' || { echo "mmcv installed without compiled ops" >&2; exit 1; }
pip_install --no-build-isolation --no-deps -e "$here"
log "done: $("$PY" -c 'import torch, torchvision, mmcv, mmpretrain; print("torch", torch.__version__, "torchvision", torchvision.__version__, "mmcv", mmcv.__version__, "mmpretrain", mmpretrain.__version__)')"
