"""The tiny segmentation config trains in mmseg's Runner on the neutral set's semantic maps and
reports mIoU through mmseg's IoUMetric; the plugin norms stay themselves in that Runner.

The set is small (16 train / 8 val images of 64x64), written to a temporary folder by
:func:`~mmnorm_plugin.datasets.photo_digits_seg.make_photo_digits_seg`.
"""
import math
import os.path as osp

import pytest

pytest.importorskip('mmseg', reason='mmsegmentation is the .[seg] extra')

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmnorm_plugin  # noqa: F401,E402
from mmnorm_plugin.datasets.photo_digits_seg import make_photo_digits_seg  # noqa: E402
from mmnorm_plugin.norms.cbn import CBN, SyncCBN  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'seg', 'pspnet_r18-w16-d8_cbn-all_1xb2-600i_photo-digits-64x64.py')
PARTS = ('backbone', 'decode_head', 'auxiliary_head')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('photo_digits_seg')
    make_photo_digits_seg(str(root), num_train=16, num_val=8)
    return str(root)


def _tiny_cfg(data_root, work_dir, iters, burnin=None):
    cfg = Config.fromfile(TINY)
    cfg.work_dir = str(work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters + 1  # validated once, below
    cfg.param_scheduler[0].end = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = 1
    if burnin is not None:
        for part in PARTS:
            cfg.model[part].norm_cfg.burnin_iters = burnin
    cfg.randomness = dict(seed=0)
    cfg.visualizer.name = f'visualizer_{osp.basename(str(work_dir))}'  # one per Runner
    return cfg


def _norms(model, part):
    return [m for m in getattr(model, part).modules() if isinstance(m, CBN)]


def test_tiny_config_trains_and_reports_miou(data_root, tmp_path):
    iters = 12
    runner = Runner.from_cfg(_tiny_cfg(data_root, tmp_path, iters, burnin=4))
    model = runner.train()
    for part in PARTS:
        norms = _norms(model, part)
        assert norms and all(type(m) is CBN for m in norms), part
        # the layers counted mmseg's optimizer steps (CBN's clock) and left the burn-in
        assert all(int(m.num_iters) == iters and m._window_on for m in norms), part
    metrics = runner.val_loop.run()
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert math.isfinite(metrics['mIoU']) and 0 < metrics['mIoU'] <= 100, metrics
    # the checkpoint holds only what torch's weights-only default loads (mmseg's test.py)
    import torch
    checkpoint = torch.load(osp.join(tmp_path, f'iter_{iters}.pth'), map_location='cpu')
    assert 'decode_head.conv_seg.weight' in checkpoint['state_dict']


def test_single_process_runner_keeps_the_plugin_norms(data_root, tmp_path):
    """mmseg's Runner is mmengine's: in one process it reverts synced norms in ``wrap_model``
    through ``mmengine.runner.runner``'s name, which the plugin guards. A SyncCBN head becomes
    CBN (its per-GPU form), CBN stays CBN (not BatchNorm), also with ``sync_bn='torch'``."""
    cfg = _tiny_cfg(data_root, tmp_path, iters=2)
    cfg.model.decode_head.norm_cfg.type = 'SyncCBN'
    cfg.sync_bn = 'torch'
    runner = Runner.from_cfg(cfg)
    assert not runner.distributed
    for part in PARTS:
        norms = _norms(runner.model, part)
        assert norms and all(type(m) is CBN for m in norms), \
            (part, sorted({type(m).__name__ for m in norms}))
    assert not any(isinstance(m, SyncCBN) for m in runner.model.modules())
    model = runner.train()
    assert all(int(m.num_iters) == 2 for m in _norms(model, 'decode_head'))
