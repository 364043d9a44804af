"""Evaluate a checkpoint: the CLI of mmdet 3.3's tools/test.py, with mmnorm_plugin loaded.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show]
        [--show-dir DIR] [--cfg-options k=v ...] [--launcher ...] [--tta]
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmnorm_plugin.apis import run_mmdet_tool  # noqa: E402

if __name__ == '__main__':
    run_mmdet_tool('test')
