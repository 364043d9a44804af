# Chooses the Python that the stack is installed into and puts it first on PATH, so every later
# `python`, `pip` and `python -m torch.distributed.run` in the calling script is that one. Sets PY.
#
#   source tools/python_env.sh        installers (setup_env.sh, run_tests.sh, run_demo.sh):
#                                     creates the virtual environment when it is missing
#   source tools/python_env.sh --run  entry points that only run (dist_*.sh, slurm_*.sh): never
#                                     creates anything; if the chosen Python cannot import torch
#                                     and mmdet, says what to install or activate and exits 1
#
#   PYTHON=/path/to/python   use this interpreter as it is (no virtual environment logic)
#   an active venv / conda   (VIRTUAL_ENV / CONDA_PREFIX set) is used as it is
#   otherwise                a virtual environment MMNORM_VENV (default: .venv in the checkout)
#                            is created if missing and used; MMNORM_VENV=0 installs into the
#                            `python3` on PATH instead (e.g. a container's system Python)
_mmnorm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_mmnorm_run_only=0
[ "${1:-}" = --run ] && _mmnorm_run_only=1
_mmnorm_venv=${MMNORM_VENV:-.venv}
case "$_mmnorm_venv" in /*|0) ;; *) _mmnorm_venv="$_mmnorm_root/$_mmnorm_venv" ;; esac
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=python
elif [ "$_mmnorm_venv" = 0 ]; then
  PY=python3
elif [ "$_mmnorm_run_only" = 1 ] && [ ! -x "$_mmnorm_venv/bin/python" ]; then
  PY=python3  # not set up here: a Python on PATH may still have the stack (checked below)
else
  if [ ! -x "$_mmnorm_venv/bin/python" ]; then
    echo "[python_env] no virtual environment active: creating $_mmnorm_venv" \
         "(set MMNORM_VENV=0 to install into $(command -v python3) instead)"
    python3 -m venv "$_mmnorm_venv" || {
      echo "[python_env] 'python3 -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)," \
           "or set MMNORM_VENV=0 / PYTHON=..." >&2
      exit 1
    }
  fi
  export VIRTUAL_ENV="$_mmnorm_venv"
  export PATH="$_mmnorm_venv/bin:$PATH"
  PY="$_mmnorm_venv/bin/python"
fi
export PYTHON="$PY"
if [ "$_mmnorm_run_only" = 1 ] && ! "$PY" -c \
    'import importlib.util as u, sys; sys.exit(not (u.find_spec("torch") and u.find_spec("mmdet")))' \
    2>/dev/null; then
  # find_spec, not import: a second, not the seconds importing torch takes, on every launch
  cat >&2 <<EOF
[python_env] $PY ($(command -v "$PY" || echo 'not found')) does not have the stack (torch, mmdet).
Use the Python the stack is installed in:
  bash tools/setup_env.sh          # installs it into $_mmnorm_root/.venv, which this script then uses
  source .venv/bin/activate        # or activate the venv/conda env that has it
  PYTHON=/path/to/python bash $0 ...   # or name the interpreter
EOF
  exit 1
fi
