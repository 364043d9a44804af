# Sourced by setup_env.sh, run_tests.sh and run_demo.sh: chooses the Python that the stack is
# installed into and puts it first on PATH, so every later `python`, `pip` and
# `python -m torch.distributed.run` in the calling script is that one. Sets PY.
#
#   PYTHON=/path/to/python   use this interpreter as it is (no virtual environment logic)
#   an active venv / conda   (VIRTUAL_ENV / CONDA_PREFIX set) is used as it is
#   otherwise                a virtual environment MMNORM_VENV (default: .venv in the checkout)
#                            is created if missing and used; MMNORM_VENV=0 installs into the
#                            `python3` on PATH instead (e.g. a container's system Python)
_mmnorm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=python
elif [ "${MMNORM_VENV:-.venv}" = 0 ]; then
  PY=python3
else
  _mmnorm_venv=${MMNORM_VENV:-.venv}
  case "$_mmnorm_venv" in /*) ;; *) _mmnorm_venv="$_mmnorm_root/$_mmnorm_venv" ;; esac
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
