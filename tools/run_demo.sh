#!/usr/bin/env bash
# The main job: install if needed, generate the tiny COCO-format dataset, train a detector with
# one of the plugin's norms on CPU, evaluate it with tools/test.py (COCO mAP). By default: CBN at
# 1 image per batch on the hard tiny set, printed next to what the current code recorded.
#   bash tools/run_demo.sh                      # CBN, 1 image per batch (the small-batch story)
#   CONFIG=configs/demo/faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py bash tools/run_demo.sh
#   CONFIG=configs/small_batch/<arm>.py bash tools/run_demo.sh     # one arm of the small-batch study
#   BASELINE=<config> ...                       # train and evaluate this one too, print both
# The demo config's result is printed next to its record (docs/evidence/demo.json, `make
# demo-record`): with unchanged code and the same threads (1), the same number.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=${CONFIG:-configs/small_batch/faster-rcnn_r18-w16_fpn_cbn_1xb1_tiny-coco-hard.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo/$(basename "$CONFIG" .py)}
BASELINE=${BASELINE:-}
# one thread: the number the record was made with (docs/evidence/demo.json), on any machine
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source tools/python_env.sh  # the Python setup_env.sh installs into (.venv unless one is active)

bash tools/setup_env.sh

run_one() {  # CONFIG WORK_DIR: dataset if missing, train, test
  local config=$1 work_dir=$2 data_root variant checkpoint
  # the dataset the config reads: data/tiny_coco, or data/tiny_coco_hard (configs/small_batch)
  data_root=$("$PY" -c 'import sys; from mmengine.config import Config
print(Config.fromfile(sys.argv[1]).train_dataloader.dataset.data_root.rstrip("/"))' "$config")
  case "$data_root" in *_hard) variant=hard ;; *) variant=default ;; esac
  if [ ! -f "$data_root/annotations/instances_val.json" ]; then
    "$PY" tools/misc/make_tiny_coco.py --out-dir "$data_root" --variant "$variant"
  fi
  "$PY" tools/train.py "$config" --work-dir "$work_dir/train"
  checkpoint=$(cat "$work_dir/train/last_checkpoint")
  "$PY" tools/test.py "$config" "$checkpoint" --work-dir "$work_dir/test"
}

runs=("$CONFIG=$WORK_DIR")
if [ -n "$BASELINE" ]; then
  runs+=("$BASELINE=work_dirs/demo/$(basename "$BASELINE" .py)")
fi
for run in "${runs[@]}"; do
  run_one "${run%%=*}" "${run#*=}"
done
"$PY" - "${runs[@]}" <<'PY'
import glob, json, os.path as osp, sys
from mmnorm_plugin.analysis.detection_study import read_arm
record_path = 'docs/evidence/demo.json'
record = json.load(open(record_path)) if osp.exists(record_path) else None
for spec in sys.argv[1:]:
    config, work_dir = spec.split('=', 1)
    arm = read_arm(config, work_dir)
    metrics = json.loads(open(sorted(glob.glob(f'{work_dir}/test/*/*.json'))[-1]).read().splitlines()[-1])
    sec = int(arm['seconds'])
    print(f'\n{config}\ntrain + test wall time: {sec // 60} min {sec % 60} s')
    for key in sorted(k for k in metrics if k.startswith('coco/') and 'mAP' in k):
        print(f'  {key:<22} {metrics[key]:.3f}')
    if record and osp.normpath(record['config']) == osp.normpath(config):
        want = record['metrics']['coco/bbox_mAP']
        same = abs(want - metrics['coco/bbox_mAP']) < 5e-4
        print(f"recorded for this config ({record_path}, commit {record['commit'][:7]}, seed "
              f"{record['seed']}, {record['threads']} threads): bbox mAP {want:.3f}"
              + (' - the same' if same else ' - this run differs (other code, threads or CPU)'))
if len(sys.argv) > 2:
    print('\nOne seed each: a difference between these runs is not a measured effect; compare '
          'norms with paired seeds (docs/compare_norms.md).')
PY
