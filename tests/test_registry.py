"""Registration: where each layer is found from, and what an unknown norm type says."""
import subprocess
import sys
import os.path as osp

import pytest
import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.registry import MODELS, DefaultScope, init_default_scope

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.validation.norm_cfg import registered_norm_types, validate_norm_cfgs

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PLUGIN_NORMS = ('CBN', 'MABN', 'BGN', 'BKN')


@pytest.mark.parametrize('norm_type', PLUGIN_NORMS)
def test_norms_live_in_the_root_registry(norm_type):
    assert MODELS.get(norm_type) is not None
    assert norm_type in registered_norm_types()


@pytest.mark.parametrize('scope', [None, 'mmdet', 'mmengine'])
@pytest.mark.parametrize('norm_type', PLUGIN_NORMS)
def test_build_norm_layer_finds_plugin_norms_from_any_scope(norm_type, scope):
    if scope is None:
        name, layer = build_norm_layer(dict(type=norm_type), 64, postfix=1)
    else:
        with DefaultScope.overwrite_default_scope(scope):
            name, layer = build_norm_layer(dict(type=norm_type), 64, postfix=1)
    assert name == 'bn1'  # BN's abbreviation: BN checkpoints keep their keys
    assert isinstance(layer, torch.nn.modules.batchnorm._BatchNorm)
    assert layer.num_features == 64


def test_cen_conv_is_a_conv_layer():
    conv = build_conv_layer(dict(type='CenConv2d'), 4, 8, 3, padding=1)
    assert conv(torch.randn(1, 4, 6, 6)).shape == (1, 8, 6, 6)


@pytest.mark.parametrize('backbone', ['XBNResNet', 'XBNResNeXt'])
def test_backbones_live_in_mmdets_registry(backbone):
    from mmdet.registry import MODELS as MMDET_MODELS
    assert MMDET_MODELS.get(backbone) is not None
    assert MODELS.get(backbone) is None  # not leaked into the root


def test_unknown_norm_type_names_the_registered_choices():
    init_default_scope('mmdet')
    cfg = dict(backbone=dict(norm_cfg=dict(type='CNB')), neck=dict(norm_cfg=dict(type='GN')))
    with pytest.raises(KeyError) as err:
        validate_norm_cfgs(cfg)
    message = str(err.value)
    assert "'CNB'" in message and 'backbone.norm_cfg' in message
    assert "Did you mean 'CBN'" in message
    for name in PLUGIN_NORMS + ('BN', 'GN', 'SyncBN'):
        assert name in message


def test_known_norm_types_validate():
    validate_norm_cfgs(dict(a=dict(norm_cfg=dict(type='CBN')), b=[dict(norm_cfg=dict(type='GN'))]),
                       scope='mmdet')


def test_train_tool_rejects_unknown_norm_before_building(tmp_path):
    cfg = tmp_path / 'bad.py'
    cfg.write_text(f"_base_ = '{ROOT}/configs/baselines/faster-rcnn_r50_fpn_bn_8xb2-1x_coco.py'\n"
                   "model = dict(neck=dict(norm_cfg=dict(type='MABNN')))\n")
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(cfg),
                           '--work-dir', str(tmp_path / 'wd')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Unknown norm type 'MABNN' at 'neck.norm_cfg'" in proc.stderr
    assert "Did you mean 'MABN'" in proc.stderr
