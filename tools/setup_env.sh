#!/usr/bin/env bash
# Idempotent installer for the whole stack (python 3.11); installs what is missing, then the
# plugin (editable).
#
#   bash tools/setup_env.sh                          # CPU torch, into .venv (created if needed)
#   TORCH_VARIANT=cu126 bash tools/setup_env.sh      # a CUDA build of torch instead
#   MMNORM_EXTRAS=analysis bash tools/setup_env.sh   # + seaborn, psutil, scikit-learn
#   MMNORM_EXTRAS=deploy bash tools/setup_env.sh     # + onnx, onnxruntime, onnxscript (ONNX export)
#   MMNORM_EXTRAS=pretrain bash tools/setup_env.sh   # + mmpretrain, torchvision of torch's build
#   MMNORM_EXTRAS=seg bash tools/setup_env.sh        # + mmsegmentation 1.2.2 (configs/seg)
#
# Where it installs (tools/python_env.sh): $PYTHON if set; else the active venv/conda env; else
# a virtual environment .venv in the checkout, created here (MMNORM_VENV=DIR for another one,
# MMNORM_VENV=0 for the `python3` on PATH). Run later commands with .venv/bin/python, or
# `source .venv/bin/activate`; `make demo`/`make test` do that themselves.
#
# TORCH_VARIANT (default cpu) is the torch 2.13.0 build: `cpu`, a CUDA tag such as `cu126`
# (whichever tags PyTorch publishes for 2.13), or `pypi` (the plain `torch==2.13.0` from the
# configured index: on Linux PyPI that is a CUDA build). For cpu/cuXXX the exact local version
# (`2.13.0+cpu`) is pinned, so pip cannot substitute another build: it is taken from pip's
# configured sources (index, find-links) when they have it, else from the PyTorch wheel index
# TORCH_INDEX_URL (default https://download.pytorch.org/whl/$TORCH_VARIANT). An installed
# torch 2.13.0 of another variant is replaced.
#
# Why each pin: torch 2.14 headers need C++20 and mmcv 2.1.0's ops do not compile against them;
# mmdet 3.3.0 refuses mmcv >= 2.2; mmcv's setup.py and mmengine's `mmdet::` config lookup import
# pkg_resources, which setuptools >= 81 no longer ships. mmcv 2.1.0 is an sdist only: a prebuilt
# wheel (CPU ops, same recipe) is taken from $MMNORM_WHEELS (default ../shared/wheels) when
# present and TORCH_VARIANT=cpu, otherwise pip compiles it (25-40 min on 2 cores; CUDA ops
# need nvcc).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/python_env.sh
source "$here/tools/python_env.sh"
wheels=${MMNORM_WHEELS:-$here/../shared/wheels}
variant=${TORCH_VARIANT:-cpu}
extras=${MMNORM_EXTRAS:-}
export PIP_ROOT_USER_ACTION=ignore
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

stamp=$(date +%s)
log() { echo "[setup_env +$(( $(date +%s) - stamp ))s] $*"; }
log "python: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.prefix)')), torch variant: $variant"

case "$variant" in
  cpu) want_cuda=none ;;
  cu[0-9]*) digits=${variant#cu}; want_cuda="${digits%?}.${digits: -1}" ;;  # cu126 -> 12.6
  pypi) want_cuda=any ;;
  *) echo "TORCH_VARIANT=$variant: use cpu, a CUDA tag such as cu126, or pypi" >&2; exit 2 ;;
esac

if "$PY" - "$want_cuda" <<'PY' 2>/dev/null
import sys, torch
want = sys.argv[1]
ok = torch.__version__.split('+')[0] == '2.13.0' and (
    want == 'any' or (torch.version.cuda or 'none') == want)
sys.exit(0 if ok else 1)
PY
then
  log "torch 2.13.0 ($variant) present"
elif [ "$variant" = pypi ]; then
  log "installing torch 2.13.0 from the configured index"
  pip_install "torch==2.13.0"
else
  log "installing torch 2.13.0+$variant"
  if ! pip_install "torch==2.13.0+$variant" 2>/dev/null; then
    index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$variant}
    log "not in pip's configured sources: using $index"
    pip_install "torch==2.13.0+$variant" --extra-index-url "$index"
  fi
fi

pip_install "setuptools>=64,<81" wheel ninja "numpy<2.5" -r "$here/requirements/build.txt"

if "$PY" -c 'import mmcv, mmcv._ext, sys; sys.exit(mmcv.__version__ != "2.1.0")' 2>/dev/null; then
  log "mmcv 2.1.0 with compiled ops present"
else
  find_links=()
  force_cuda=()
  if [ "$variant" = cpu ]; then
    force_cuda=(FORCE_CUDA=0)
    if ls "$wheels"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
      log "installing mmcv 2.1.0 from the prebuilt wheel in $wheels"
      find_links=(--find-links "$wheels")
    fi
  fi
  [ ${#find_links[@]} -eq 0 ] && log "compiling mmcv 2.1.0 with ops (25-40 min)"
  env MMCV_WITH_OPS=1 "${force_cuda[@]}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip install --disable-pip-version-check -q --no-build-isolation \
    "${find_links[@]}" "mmcv==2.1.0" "mmengine==0.10.7"
  "$PY" -c 'import mmcv._ext' || { echo "mmcv installed without compiled ops" >&2; exit 1; }
fi

# mmpretrain imports torchvision, which must be the build of the installed torch (a PyPI
# torchvision is a CUDA build: next to a CPU torch `import torchvision` raises). Same sources as
# torch: for cpu/cuXXX the exact local version from pip's sources or $MMNORM_WHEELS, else
# PyTorch's index; for pypi the plain release from the configured index. Where none has it,
# mmpretrain is installed without it (its configs load, its modules do not import, and the
# tests that need them skip here, saying so; tools/run_tests.sh then runs them in the second
# environment of tools/setup_pretrain_env.sh): never a torchvision of another build.
tv_ok() { "$PY" -c 'import sys, torchvision; sys.exit(torchvision.__version__.split("+")[0] != "0.28.0")' 2>/dev/null; }
case ",$extras," in *,pretrain,*)
  if tv_ok; then
    log "torchvision 0.28.0 present"
  elif [ "$variant" = pypi ]; then
    log "installing torchvision 0.28.0 from the configured index"
    pip_install "torchvision==0.28.0"
    if ! tv_ok; then  # the index's torch was a local build (e.g. +cpu from find-links)
      "$PY" -m pip uninstall -q -y torchvision
      log "WARNING: the index's torchvision 0.28.0 does not import next to torch" \
        "$("$PY" -c 'import torch; print(torch.__version__)'): removed; mmpretrain's tests skip"
    fi
  else
    log "installing torchvision 0.28.0+$variant"
    tv_links=()
    [ -d "$wheels" ] && tv_links=(--find-links "$wheels")
    index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$variant}
    if ! pip_install "${tv_links[@]}" "torchvision==0.28.0+$variant" 2>/dev/null &&
       ! { log "not in pip's configured sources: using $index";
           pip_install "torchvision==0.28.0+$variant" --extra-index-url "$index" 2>/dev/null; }; then
      log "WARNING: torchvision==0.28.0+$variant is in none of pip's sources, $wheels or" \
        "$index: mmpretrain will not import here (add that wheel to $wheels); make test runs" \
        "its tests in .venv-pretrain (tools/setup_pretrain_env.sh)"
    fi
  fi ;;
esac

reqs=(-r "$here/requirements/runtime.txt" -r "$here/requirements/tests.txt")
for extra in analysis deploy pretrain seg; do  # MMNORM_EXTRAS=analysis,deploy: both
  case ",$extras," in *,"$extra",*) reqs+=(-r "$here/requirements/$extra.txt") ;; esac
done
pip_install "${reqs[@]}"
pip_install --no-build-isolation --no-deps -e "$here"
log "done: $("$PY" -c 'import torch, mmcv, mmengine, mmdet; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmengine", mmengine.__version__, "mmdet", mmdet.__version__)')"
