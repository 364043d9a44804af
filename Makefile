# Thin wrappers: each target installs what it needs (tools/setup_env.sh is idempotent) into the
# active venv, or .venv (created when none is active; MMNORM_VENV=0: the python3 on PATH).
.PHONY: install demo demo-small-batch test test-fast data small-batch-study

install:
	bash tools/setup_env.sh

data:
	bash -c 'source tools/python_env.sh && "$$PY" tools/misc/make_tiny_coco.py --out-dir data/tiny_coco'
	bash -c 'source tools/python_env.sh && "$$PY" tools/misc/make_tiny_coco.py --out-dir data/tiny_coco_hard --variant hard'

demo:
	bash tools/run_demo.sh

# The small-batch story in one command (about 10 min): CBN and BN, both at 1 image per batch on
# the hard tiny set, printed side by side and next to the study's BN at 8 images per batch.
demo-small-batch:
	CONFIG=configs/small_batch/faster-rcnn_r18-w16_fpn_cbn_1xb1_tiny-coco-hard.py \
	BASELINE=configs/small_batch/faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py \
	bash tools/run_demo.sh

# The README's "Small-batch detection study": every arm of configs/small_batch, one after the
# other (about 8-12 min each on one CPU thread), then the table and the bar chart.
SMALL_BATCH_ARMS = BN-8:bn_1xb8 BN-1:bn_1xb1 GN-1:gn_1xb1 CBN-1:cbn_1xb1 MABN-1:mabn_1xb1 \
	BGN-1:bgn_1xb1 BKN-1:bkn_1xb1 XBN-1:xbn-p2-gn_1xb1
small-batch-study:
	set -e; for arm in $(SMALL_BATCH_ARMS); do \
	  CONFIG=configs/small_batch/faster-rcnn_r18-w16_fpn_$${arm#*:}_tiny-coco-hard.py \
	  WORK_DIR=work_dirs/small_batch/$${arm#*:} bash tools/run_demo.sh; done
	bash -c 'source tools/python_env.sh && "$$PY" tools/analysis/detection_study.py \
	  $(foreach arm,$(SMALL_BATCH_ARMS),$(word 1,$(subst :, ,$(arm)))=work_dirs/small_batch/$(word 2,$(subst :, ,$(arm)))) \
	  --out work_dirs/small_batch/small_batch_detection.png --json work_dirs/small_batch/small_batch_detection.json'

test:
	bash tools/run_tests.sh

test-fast:
	bash tools/run_tests.sh -m "not slow"

# The GPU check (issue 22, docs/gpu_check.md): correctness on the device, autocast, host syncs,
# layer timings, torch.compile, a ResNet-50 + FPN step; JSON + table in $OUT or
# work_dirs/gpu_check. On the lent GPU machine: `bash tools/gpu_check/run.sh` with .whl carried;
# here: `DEVICE=cpu make gpu-check` (small sizes, a few minutes). GPU_CHECK_ARGS="--budget 300".
.PHONY: gpu-check gpu-wheels gpu-dry-run
gpu-check:
	bash tools/gpu_check/run.sh $(GPU_CHECK_ARGS)

# .whl/: the wheels the device machine lacks (pure Python, cp312 binaries, mmcv 2.1.0 built
# without ops), size-checked
gpu-wheels:
	bash tools/gpu_check/make_wheels.sh

# rehearse the device call: install .whl under Python 3.12, run the kit on a stand-in image
gpu-dry-run:
	bash tools/gpu_check/dry_run.sh $(GPU_CHECK_ARGS)
