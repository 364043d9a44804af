#!/usr/bin/env bash
# make gpu-dry-run: rehearse, without a GPU, a run on a machine that has Python 3.12 and torch
# but not mmengine/mmcv/mmdet (docs/gpu_check.md).
#
# 1. Python 3.12 (the target's): the wheel folder installs with run.sh's exact pip command
#    (--no-index --no-deps --target) and the packages import that need no torch (numpy, which
#    the target image has, comes from the configured index into a side folder).
# 2. The kit end to end on a stand-in for the target image: this project's Python 3.11 run
#    with -S (no site-packages) and PYTHONPATH = links to every distribution of its venv that
#    the target image also has (torch, numpy, scipy, matplotlib, cv2, yaml, rich, ...; not
#    mmengine, mmcv, mmdet, addict, yapf, platformdirs, termcolor, terminaltables). run.sh then
#    installs the pure-Python wheels (mmcv 2.1.0 without ops among them) into a private
#    target as it would there, and the kit runs on the CPU through the mmcv._ext
#    stand-in. pycocotools and shapely are the venv's cp311 builds here (the wheels' are
#    cp312: step 1 installs those).
#
#   bash tools/gpu_check/dry_run.sh [kit arguments, default --budget 120]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
source tools/python_env.sh
wheels=${GPU_CHECK_WHEELS:-.whl}
work=${DRY_RUN_DIR:-/tmp/mmnorm-gpu-dry-run}
[ $# -gt 0 ] || set -- --budget 120
ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "no wheels in $wheels: make gpu-wheels" >&2; exit 2; }
rm -rf "$work"; mkdir -p "$work"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== 1. Python 3.12: install $wheels as run.sh does, import what needs no torch"
py312=${PY312:-}
if [ -z "$py312" ]; then  # a pyenv shim may exist and still fail: try each candidate
  for c in "$(command -v python3.12 || true)" /root/.pyenv/versions/3.12*/bin/python3.12; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" --version >/dev/null 2>&1; then py312=$c; break; fi
  done
fi
if [ -z "$py312" ]; then
  echo "no python3.12 here (set PY312=...): step 1 skipped"
else
  "$py312" --version
  "$py312" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site312" "$wheels"/*.whl
  "$py312" -m pip install -q --no-deps --only-binary=:all: --target "$work/image312" numpy
  PYTHONPATH="$work/site312:$work/image312" "$py312" -S - "$work/site312" <<'PY'
import importlib, importlib.metadata as md, sys
for name in ('addict', 'yapf', 'platformdirs', 'termcolor', 'terminaltables',
             'pycocotools.mask', 'pycocotools.coco', 'shapely.geometry'):
    importlib.import_module(name)
dists = ', '.join(f"{d.metadata['Name']} {d.version}" for d in md.distributions(path=[sys.argv[1]]))
print('python', sys.version.split()[0], 'imports ok; installed:', dists)
PY
fi

echo "== 2. the kit on a stand-in for the target image (Python 3.11, CPU)"
"$PY" - "$work/image" <<'PY'
import importlib.metadata as md, os, re, sys
target = sys.argv[1]
carried = {'addict', 'mmcv', 'mmdet', 'mmengine', 'mmnorm-plugin', 'platformdirs', 'termcolor',
           'terminaltables', 'yapf', 'tzdata'}  # pycocotools, shapely: cp311 stand-ins
os.makedirs(target)
linked = []
for dist in md.distributions():
    name = re.sub(r'[-_.]+', '-', dist.metadata['Name'].lower())
    if name in carried or not dist.files:
        continue
    tops = {str(f).split('/')[0] for f in dist.files}
    for top in tops:
        if top.endswith(('.pth', '.dist-info')) or top in ('..', '__pycache__', 'bin'):
            continue
        src = os.path.join(str(dist.locate_file('')), top)
        dst = os.path.join(target, top)
        if os.path.exists(src) and not os.path.lexists(dst):
            os.symlink(src, dst)
    linked.append(name)
print(f'image stand-in: {len(linked)} distributions linked into {target}')
PY
mkdir -p "$work/bin" "$work/wheels"
printf '#!/bin/sh\nexec %s -S "$@"\n' "$PY" > "$work/bin/python3"
chmod +x "$work/bin/python3"
for w in "$wheels"/*.whl; do
  case "$(basename "$w")" in *-cp3*) ;; *) ln -s "$root/$w" "$work/wheels/" ;; esac
done
if PYTHONPATH="$work/image" "$work/bin/python3" -c 'import mmengine' 2>/dev/null; then
  echo "the stand-in image already has mmengine: not a faithful rehearsal" >&2; exit 1
fi
set +e
env -u VIRTUAL_ENV PYTHON="$work/bin/python3" PYTHONPATH="$work/image" DEVICE=cpu \
  GPU_CHECK_WHEELS="$work/wheels" GPU_CHECK_SITE="$work/site" OUT="$work/out" \
  bash tools/gpu_check/run.sh "$@"
rc=$?
set -e
echo "== run.sh exit status $rc; files in $work/out:"
ls -l "$work/out"
"$PY" - "$work/out/gpu_check.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print('mmcv._ext:', s['env']['mmcv_ops'], '| mmcv', s['env']['mmcv'], '| mmdet', s['env']['mmdet'])
print({k: p['status'] for k, p in s['parts'].items()})
assert s['env']['mmcv_ops'].startswith('stub'), 'expected the mmcv._ext stand-in'
assert s['parts']['correctness']['status'] == 'passed'
PY
