"""tools/test.py's check that a checkpoint fits the config it is evaluated with."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.apis import check_test_checkpoint
from mmnorm_plugin.model_converters.release import strip_training_state
from mmnorm_plugin.checkpoint.loading import CheckpointMismatch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo')
FASTER_BN = osp.join(DEMO, 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py')
FASTER_CBN = osp.join(DEMO, 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py')
MASK_BN = osp.join(DEMO, 'mask-rcnn_r18-w16_fpn_bn_tiny-coco.py')


def _checkpoint(config, path, train_step=False):
    """A Runner-like checkpoint of ``config``'s model (with CBN history after one step)."""
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    model = MODELS.build(copy.deepcopy(cfg.model))  # as the Runner: cfg stays unedited
    if train_step:  # sizes and fills CBN's lazily sized history
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
                                             batch_input_shape=(64, 64), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[4., 4., 40., 40.]]),
                                           labels=torch.tensor([1]))
        model.train()
        for _ in range(2):
            losses = model.loss(torch.randn(1, 3, 64, 64), [sample])
            model.parse_losses(losses)[0].backward()
    torch.save(dict(state_dict=model.state_dict(), meta=dict(cfg=cfg.pretty_text),
                    optimizer=dict(state={})), path)
    return path


def _cfg(config):
    return Config.fromfile(config)


def test_another_configs_checkpoint_is_refused_with_what_differs(tmp_path):
    ckpt = _checkpoint(FASTER_BN, str(tmp_path / 'faster.pth'))
    with pytest.raises(CheckpointMismatch) as err:
        check_test_checkpoint(_cfg(MASK_BN), ckpt, MASK_BN)
    message = str(err.value)
    assert 'model weights are not in the checkpoint' in message
    assert 'roi_head.mask_head' in message
    assert "the checkpoint's saved config differs in" in message
    assert "model.roi_head.mask_head" in message  # present in the config, absent in the ckpt
    assert 'Fix: evaluate with the config the checkpoint was trained with' in message
    # the explicit override evaluates anyway, with the same account as a warning
    text = check_test_checkpoint(_cfg(MASK_BN), ckpt, MASK_BN, allow_mismatch=True)
    assert 'roi_head.mask_head' in text and 'evaluating anyway' in text


def test_shape_mismatch_is_refused(tmp_path):
    ckpt = _checkpoint(FASTER_BN, str(tmp_path / 'faster.pth'))
    cfg = _cfg(FASTER_BN)
    cfg.model.roi_head.bbox_head.num_classes = 5
    with pytest.raises(CheckpointMismatch, match='shape mismatches'):
        check_test_checkpoint(cfg, ckpt, 'x.py')


def test_matching_checkpoint_passes_silently(tmp_path):
    ckpt = _checkpoint(FASTER_CBN, str(tmp_path / 'cbn.pth'), train_step=True)
    assert check_test_checkpoint(_cfg(FASTER_CBN), ckpt) is None
    # the stripped (release) form too: the CBN window is training-only state
    release, _ = strip_training_state(torch.load(ckpt, weights_only=True))
    torch.save(release, tmp_path / 'release.pth')
    assert check_test_checkpoint(_cfg(FASTER_CBN), str(tmp_path / 'release.pth')) is None


def test_cbn_checkpoint_under_its_bn_twin_warns_but_evaluates(tmp_path):
    ckpt = _checkpoint(FASTER_CBN, str(tmp_path / 'cbn.pth'), train_step=True)
    text = check_test_checkpoint(_cfg(FASTER_BN), ckpt, FASTER_BN)
    assert "model.neck.norm_cfg.type: checkpoint 'CBN' vs config 'BN'" in text
    assert 'No model weight is left unset' in text


def test_test_tool_refuses_another_configs_checkpoint(tmp_path):
    import subprocess
    import sys
    ckpt = _checkpoint(FASTER_BN, str(tmp_path / 'faster.pth'))
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), MASK_BN, ckpt,
                           '--work-dir', str(tmp_path / 'wd')],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert 'CheckpointMismatch' in proc.stderr and 'roi_head.mask_head' in proc.stderr
    assert '--allow-checkpoint-mismatch' in proc.stderr
