# Thin wrappers: each target installs what it needs (tools/setup_env.sh is idempotent) into the
# active venv, or .venv (created when none is active; MMNORM_VENV=0: the python3 on PATH).
.PHONY: install demo test test-fast data

install:
	bash tools/setup_env.sh

data:
	bash -c 'source tools/python_env.sh && "$$PY" tools/misc/make_tiny_coco.py --out-dir data/tiny_coco'

demo:
	bash tools/run_demo.sh

test:
	bash tools/run_tests.sh

test-fast:
	bash tools/run_tests.sh -m "not slow"
