# Thin wrappers: each target installs what it needs (tools/setup_env.sh is idempotent) into the
# active venv, or .venv (created when none is active; MMNORM_VENV=0: the python3 on PATH).
.PHONY: install demo demo-record demo-small-batch test test-fast data small-batch-study norm-sweep-study \
	norm-sweep-report norm-sweep-finetune pretrain cbn-gradient-control norm-sweep-defaults

install:
	bash tools/setup_env.sh

data:
	bash -c 'source tools/python_env.sh && "$$PY" tools/misc/make_tiny_coco.py --out-dir data/tiny_coco'
	bash -c 'source tools/python_env.sh && "$$PY" tools/misc/make_tiny_coco.py --out-dir data/tiny_coco_hard --variant hard'
	bash -c 'source tools/python_env.sh && "$$PY" -c "from mmnorm_plugin.datasets import make_photo_digits as m; m(\"data/photo_digits\")"'
	bash -c 'source tools/python_env.sh && "$$PY" -c "from mmnorm_plugin.datasets import make_photo_digit_crops_imagenet as m; m(\"data/photo_digit_crops_in1k\")"'

demo:
	bash tools/run_demo.sh

# What `make demo` prints, recorded with the current code (docs/evidence/demo.json; about 10 min
# on one core); the test suite checks the code still computes it (tools/misc/demo_record.py --check).
demo-record: install
	bash -c 'source tools/python_env.sh && "$$PY" tools/misc/demo_record.py'

# The small-batch story in one command (about 10 min): CBN and BN, both at 1 image per batch on
# the hard tiny set, printed side by side and next to the study's BN at 8 images per batch.
demo-small-batch:
	CONFIG=configs/small_batch/faster-rcnn_r18-w16_fpn_cbn_1xb1_tiny-coco-hard.py \
	BASELINE=configs/small_batch/faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py \
	bash tools/run_demo.sh

# The small-batch detection study (docs/study_small_batch.md): every arm of configs/small_batch,
# one after the other (about 8-12 min each on one CPU thread), then the table and the bar chart.
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

# CBN's official gradient, its causal control (radial component removed) and the exact gradient
# at 1 and 32 images, then batch 32 with the paper's burn-in and a 4x schedule; 3 seeds, paired
# tables (docs/cbn_gradient_control*/). About 15 min on one core.
CBN_OFF = \"type\": \"CBN\", \"buffer_num\": 3, \"grad_through_compensation\": false, \"running_stats\": \"batch\"
cbn-gradient-control: install
	bash -c 'source tools/python_env.sh && OMP_NUM_THREADS=1 "$$PY" tools/analysis/small_batch_study.py \
	  --methods --norm "CBN exact grad, batch stats={\"norm_cfg\": {\"type\": \"CBN\", \"buffer_num\": 3, \"running_stats\": \"batch\"}}" \
	  "CBN official grad={\"norm_cfg\": {$(CBN_OFF)}}" \
	  "CBN official grad, radial component removed={\"norm_cfg\": {$(CBN_OFF)}, \"radial_free_grad\": true}" \
	  --batch-sizes 1 32 --seeds 0 1 2 --paired "CBN official grad" --paired "CBN exact grad, batch stats" \
	  --out-dir docs/cbn_gradient_control \
	  --title "CBN gradient: official, official without its radial component, exact (digits, 3 seeds)"'
	bash -c 'source tools/python_env.sh && OMP_NUM_THREADS=1 "$$PY" tools/analysis/small_batch_study.py \
	  --methods BN --norm "CBN official grad={\"norm_cfg\": {$(CBN_OFF)}}" \
	  "CBN official grad, burn-in half (88 steps)={\"norm_cfg\": {$(CBN_OFF), \"burnin_iters\": 88}}" \
	  "CBN official grad, 16 epochs={\"norm_cfg\": {$(CBN_OFF)}, \"epochs\": 16}" \
	  "BN, 16 epochs={\"norm_cfg\": {\"type\": \"BN\"}, \"epochs\": 16}" \
	  "CBN official grad, radial component removed, 16 epochs={\"norm_cfg\": {$(CBN_OFF)}, \"radial_free_grad\": true, \"epochs\": 16}" \
	  --batch-sizes 32 --seeds 0 1 2 --paired "CBN official grad" --paired BN --paired "BN, 16 epochs" \
	  --out-dir docs/cbn_gradient_control_batch32 \
	  --title "CBN official gradient at batch 32: burn-in, schedule (digits, 3 seeds)"'

test-fast:
	bash tools/run_tests.sh -m "not slow"

# Property-based fuzzing of every checkpoint loader (docs/checkpoint_safety.md): hostile
# pickles, containers, config text, records and damaged bytes; derandomized, so the same
# FUZZ_EXAMPLES tries the same inputs. CI runs 300 per target (tests/test_checkpoint).
FUZZ_EXAMPLES ?= 3000
.PHONY: fuzz
fuzz:
	bash -c 'source tools/python_env.sh --run && OMP_NUM_THREADS=1 "$$PY" \
	  tests/test_checkpoint/fuzz_checkpoint_loaders.py --examples $(FUZZ_EXAMPLES) $(FUZZ_ARGS)'

# The norm_sweep grid (docs/study_norm_sweep_grid.md, records docs/norm_sweep_*): every norm at 1
# and 2 images per batch and BN at 8, 5 paired seeds, on the neutral set from scratch. Resumable:
# rerun to continue; records under work_dirs/norm_sweep/. About 2.3-3 min per arm-seed on one
# core; 75 arm-seeds.
SWEEP_CONFIG = configs/norm_sweep/faster-rcnn_r18-w16_fpn_bn_scratch_photo-digits.py
SWEEP_ARGS = --norms BN GN CBN MABN BGN BKN XBN --batch 1 2 --also BN@8 --reference BN@8 \
	--groups 8 --seeds 0 1 2 3 4
norm-sweep-study: install
	bash -c 'source tools/python_env.sh && "$$PY" tools/analysis/norm_sweep.py $(SWEEP_CONFIG) \
	  $(SWEEP_ARGS) --jobs $${JOBS:-2} --nice 10 --out work_dirs/norm_sweep/photo-digits_scratch \
	  --report docs/norm_sweep_photo-digits_scratch --readme docs/study_norm_sweep_grid.md photo-digits_scratch \
	  --title "Neutral set (photo digits), from scratch, norm in backbone + FPN + head"'

# Regenerate the grid's table (docs/study_norm_sweep_grid.md) and figure from the committed JSON
# (no training).
norm-sweep-report:
	bash -c 'source tools/python_env.sh && "$$PY" tools/analysis/norm_sweep.py \
	  --from-json docs/norm_sweep_photo-digits_scratch.json --reference BN@8 \
	  --report docs/norm_sweep_photo-digits_scratch --readme docs/study_norm_sweep_grid.md photo-digits_scratch \
	  --title "Neutral set (photo digits), from scratch, norm in backbone + FPN + head"'

# The defaults study (docs/study_defaults.md): each default changed from the official code, and
# the PreciseNormHook remedy, against the arm it varies (1 image per batch, 5 paired seeds;
# neutral and hard set from scratch, neutral set fine-tuned; docs/norm_sweep_defaults_*).
# Resumable; records committed in docs/ are not rerun (about 110 arm-seeds of 2-6 min on one
# core from nothing).
norm-sweep-defaults: install
	JOBS=$${JOBS:-2} bash tools/analysis/norm_sweep_defaults.sh photo-digits
	JOBS=$${JOBS:-2} bash tools/analysis/norm_sweep_defaults.sh tiny-coco-hard
	JOBS=$${JOBS:-2} bash tools/analysis/norm_sweep_defaults.sh photo-digits-finetune

# The fine-tune setting's backbone: ResNet-18-w16 pretrained on 10 digits + background in photo
# crops (a few minutes on one core); configs/norm_sweep/*_finetune_* load it.
pretrain: install
	bash -c 'source tools/python_env.sh && "$$PY" tools/misc/pretrain_backbone.py \
	  --out checkpoints/r18-w16_photo-digit-crops.pth'

# The fine-tune setting (frozen pretrained backbone, the norm in FPN + head), same grid.
norm-sweep-finetune: install
	bash -c 'source tools/python_env.sh && "$$PY" tools/analysis/norm_sweep.py \
	  configs/norm_sweep/faster-rcnn_r18-w16_fpn_bn_finetune_photo-digits.py --parts neck heads \
	  --norms BN GN CBN MABN BGN BKN FrozenBN --batch 1 2 --also BN@8 --reference BN@8 \
	  --groups 8 --seeds 0 1 2 3 4 --jobs $${JOBS:-2} --nice 10 \
	  --out work_dirs/norm_sweep/photo-digits_finetune --report docs/norm_sweep_photo-digits_finetune \
	  --title "Neutral set (photo digits), fine-tune: frozen pretrained backbone, norm in FPN + head"'

# The GPU check (docs/gpu_check.md): correctness on the device, autocast, host syncs,
# layer timings, torch.compile, a ResNet-50 + FPN step; JSON + table in $OUT or
# work_dirs/gpu_check. On a GPU machine: `make gpu-check` (or `bash tools/gpu_check/run.sh`,
# with .whl where mmengine/mmcv/mmdet are missing); on a CPU: `DEVICE=cpu make gpu-check` (small
# sizes, a few minutes). GPU_CHECK_ARGS="--budget 300".
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
