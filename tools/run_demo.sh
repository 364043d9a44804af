#!/usr/bin/env bash
# The main job: install if needed, generate the tiny COCO-format dataset, train a detector with
# one of the plugin's norms (CBN by default) on CPU, evaluate it with tools/test.py (COCO mAP).
#   bash tools/run_demo.sh                      # CBN demo
#   CONFIG=configs/demo/faster-rcnn_r18-w16_fpn_bn_tiny-coco.py bash tools/run_demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=${CONFIG:-configs/demo/faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo/$(basename "$CONFIG" .py)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
source tools/python_env.sh  # the Python setup_env.sh installs into (.venv unless one is active)

bash tools/setup_env.sh
if [ ! -f data/tiny_coco/annotations/instances_val.json ]; then
  "$PY" tools/misc/make_tiny_coco.py --out-dir data/tiny_coco
fi
start=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR/train"
checkpoint=$(cat "$WORK_DIR/train/last_checkpoint")
"$PY" tools/test.py "$CONFIG" "$checkpoint" --work-dir "$WORK_DIR/test"
"$PY" - "$WORK_DIR/test" "$CONFIG" "$(( $(date +%s) - start ))" <<'PY'
import glob, json, sys
work_dir, config, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
metrics = json.loads(open(sorted(glob.glob(f'{work_dir}/*/*.json'))[-1]).read().splitlines()[-1])
print(f'\n{config}\ntrain + test wall time: {seconds // 60} min {seconds % 60} s')
for key in sorted(k for k in metrics if k.startswith('coco/') and 'mAP' in k):
    print(f'  {key:<22} {metrics[key]:.3f}')
PY
