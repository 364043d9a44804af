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
