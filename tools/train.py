"""Train a detector: the CLI of mmdet 3.3's tools/train.py, with mmnorm_plugin loaded (for a
config of default_scope='mmpretrain', e.g. configs/pretrain, mmpretrain 1.2's tools/train.py).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
        [--unsafe-load CHECKPOINT]

Before mmdet's main runs (mmnorm_plugin.apis.run_mmdet_tool): every norm config is validated,
cfg.sync_bn turns CBN/BGN/BKN into SyncCBN/SyncBGN/SyncBKN (MABN, which has no synced
variant, is refused in distributed runs), the config gets
custom_imports=['mmnorm_plugin'] if it lacks it (so the dumped config and the checkpoint load
in mmdet's APIs), and `--launcher pytorch` without CUDA runs on gloo (tools/dist_train.sh).
Checkpoints are written atomically with a SHA-256 (SafeCheckpointHook); `--resume` skips
checkpoints that do not load or verify and resumes from the newest intact one; in distributed
runs a rank that loses another stops with one line within env_cfg.dist_cfg.timeout (default
1800 s). See docs/distributed.md, "Training on preemptible machines". Every checkpoint the
run loads (--resume, load_from, init_cfg Pretrained) is loaded weights-only and verified, and
its text is never run; --unsafe-load CHECKPOINT trusts that one file (docs/checkpoint_safety.md).
"""
import os.path as osp
import sys

# runnable from a checkout without `pip install -e .`
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmnorm_plugin.apis import run_mmdet_tool  # noqa: E402

if __name__ == '__main__':
    run_mmdet_tool('train')
