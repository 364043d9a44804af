# Thin wrappers: each target installs what it needs (tools/setup_env.sh is idempotent).
.PHONY: install demo test test-fast data

install:
	bash tools/setup_env.sh

data:
	python tools/misc/make_tiny_coco.py --out-dir data/tiny_coco

demo:
	bash tools/run_demo.sh

test:
	bash tools/run_tests.sh

test-fast:
	bash tools/run_tests.sh -m "not slow"
