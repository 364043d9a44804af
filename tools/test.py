"""Evaluate a checkpoint: the CLI of mmdet 3.3's tools/test.py, with mmnorm_plugin loaded (for a
config of default_scope='mmpretrain', e.g. configs/pretrain, mmpretrain 1.2's tools/test.py).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show]
        [--show-dir DIR] [--cfg-options k=v ...] [--launcher ...] [--tta]
        [--allow-checkpoint-mismatch] [--unsafe-load CHECKPOINT]

A checkpoint that does not load, or whose recorded SHA-256 no longer matches its content, is
refused in one line (checkpoints without a checksum load unverified, and the log says so); it is
loaded weights-only and its saved config is read as data, never run (--unsafe-load CHECKPOINT
trusts that one file; docs/checkpoint_safety.md). The checkpoint is then
compared with the model built from CONFIG: missing weights or other shapes are refused with what
differs (--allow-checkpoint-mismatch evaluates anyway); extra entries or another saved config
only warn (a CBN checkpoint under its BN twin config is fine).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmnorm_plugin.apis import run_mmdet_tool  # noqa: E402

if __name__ == '__main__':
    run_mmdet_tool('test')
