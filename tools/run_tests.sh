#!/usr/bin/env bash
# The test command: install the stack if needed, then run the whole pytest suite (slow tests
# included). Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python -m pytest -q --durations=15 "$@"
