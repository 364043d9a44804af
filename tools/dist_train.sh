#!/usr/bin/env bash
# Distributed train on one or more nodes with torchrun:
#   bash tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as with mmdet's launcher. The interpreter is
# the set-up's (tools/python_env.sh: PYTHON, else the active venv/conda env, else .venv, else the
# `python3` on PATH if it has torch and mmdet; otherwise it says what to activate). Without
# CUDA, tools/train.py and tools/test.py start the process group with gloo themselves
# (mmnorm_plugin/apis/dist.py): GPUS is then the number of CPU processes.
set -euo pipefail
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
source "$(dirname "$0")/python_env.sh" --run  # sets PY

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PY" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
