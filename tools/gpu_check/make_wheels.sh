#!/usr/bin/env bash
# Prepare .whl/: the wheels the GPU check needs on a GPU machine that has Python 3.12, torch,
# numpy, scipy, matplotlib, opencv-python-headless, pyyaml, rich, pillow, six, tqdm, packaging
# and setuptools but no mmengine/mmcv/mmdet and no network. See docs/gpu_check.md.
#
#   make gpu-wheels                  # or: bash tools/gpu_check/make_wheels.sh [DIR]
#
# * pure-Python wheels of the OpenMMLab stack and the small packages their import path needs
#   (each one's Requires-Dist, minus what that image has);
# * binary wheels for CPython 3.12 manylinux x86-64 (pycocotools, shapely);
# * mmcv 2.1.0 built here from its source archive with MMCV_WITH_OPS=0: pure Python, no
#   mmcv._ext (the kit puts a stub module in its place, see tools/gpu_check/gpu_check.py);
# * the plugin itself is not a wheel: it is used from the checkout (PYTHONPATH=$PWD).
# Then a size check: the folder stays small enough to copy along with the checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tools/python_env.sh
dest=${1:-.whl}
max_mib=${GPU_WHEELS_MAX_MIB:-24}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$dest"

# Pinned to what this project's CPU stack runs (requirements/runtime.txt, pip freeze).
PURE=(
  mmengine==0.10.7    # needs addict matplotlib numpy pyyaml rich termcolor yapf opencv-python
  mmdet==3.3.0        # needs matplotlib numpy pycocotools scipy shapely six terminaltables tqdm
  addict==2.4.0
  yapf==0.43.0        # needs platformdirs (tomli only below 3.11)
  platformdirs==4.14.9
  termcolor==3.3.0
  terminaltables==3.1.10
)
BINARY=(
  pycocotools==2.0.11  # imported by mmdet.structures.mask (hence by mmdet.models)
  shapely==2.2.0       # likewise
)
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dest" "${PURE[@]}" "${BINARY[@]}"

if ! ls "$dest"/mmcv_lite-2.1.0-*none-any.whl >/dev/null 2>&1; then
  # From mmcv's source archive: with MMCV_WITH_OPS=0 its setup.py names the project mmcv-lite
  # (so `pip wheel mmcv==2.1.0` rejects the metadata) and compiles nothing; torch is not needed.
  # --no-build-isolation: setup.py imports pkg_resources (setuptools < 81, requirements/build.txt).
  if ! "$PY" -c 'import pkg_resources, wheel' >/dev/null 2>&1; then
    "$PY" -m pip install -q 'setuptools>=64,<81' wheel  # requirements/build.txt's pins
  fi
  build=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$build" mmcv==2.1.0
  MMCV_WITH_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$build" \
    "$build"/mmcv-2.1.0.tar.gz
  mv "$build"/mmcv_lite-2.1.0-*.whl "$dest"/
  rm -rf "$build"
fi

# one version of each package (two stop the whole --no-deps install)
dupes=$(ls "$dest"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "[gpu-wheels] more than one wheel of: $dupes (in $dest)" >&2; exit 1
fi
"$PY" - "$dest"/mmcv_lite-*.whl <<'PY'
import sys, zipfile
for path in sys.argv[1:]:
    if any(n.endswith(('.so', '.pyd')) for n in zipfile.ZipFile(path).namelist()):
        sys.exit(f'[gpu-wheels] {path} has compiled ops')
PY
ls -l "$dest"
kib=$(du -sk "$dest" | cut -f1)
tree=$( { git ls-files -z --cached --others --exclude-standard 2>/dev/null \
          | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1; } || echo 0)
echo "[gpu-wheels] $dest: $(ls "$dest"/*.whl | wc -l) wheels, $((kib / 1024)) MiB ($kib KiB);" \
     "with the working tree $(( (kib + ${tree:-0}) / 1024 )) MiB" \
     "(limit for the wheels here: $max_mib MiB)"
if [ "$kib" -gt $((max_mib * 1024)) ]; then echo "[gpu-wheels] too large" >&2; exit 1; fi
