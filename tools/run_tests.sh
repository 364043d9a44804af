#!/usr/bin/env bash
# The test command: install the stack if needed (tools/setup_env.sh: into .venv unless a venv is
# active or MMNORM_VENV=0), then run the whole pytest suite (slow tests included) with that
# Python. Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/python_env.sh
# the analysis extra too: the small-batch study's tests use scikit-learn
MMNORM_EXTRAS=${MMNORM_EXTRAS:-analysis} bash tools/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
"$PY" -m pytest -q --durations=15 "$@"
