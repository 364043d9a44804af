#!/usr/bin/env bash
# The test command: install the stack if needed (tools/setup_env.sh: into .venv unless a venv is
# active or MMNORM_VENV=0), then run the whole pytest suite (slow tests included) with that
# Python. Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/python_env.sh
# the extras whose tests would otherwise skip: the small-batch study's tests use scikit-learn,
# the ONNX export test onnx/onnxscript/onnxruntime (about 120 MB of wheels, ~15 s to install),
# the ImageNet configs and the pretrain -> detect path mmpretrain (+ torchvision of torch's build)
MMNORM_EXTRAS=${MMNORM_EXTRAS:-analysis,deploy,pretrain} bash tools/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
"$PY" -m pytest -q --durations=15 "$@"
