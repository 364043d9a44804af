"""Config-time norm_cfg validation: every message names the config path and the fix."""
import glob
import os.path as osp
import subprocess
import sys
import warnings

import pytest
from mmengine.config import Config

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.validation.norm_cfg import accepted_norm_args, validate_norm_cfgs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _validate(cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        validate_norm_cfgs(cfg, scope='mmdet')
    return [str(w.message) for w in caught]


def test_norm_cfg_without_type_names_the_path_and_the_fix():
    with pytest.raises(KeyError) as err:
        _validate(dict(neck=dict(norm_cfg=dict(requires_grad=True))))
    message = str(err.value)
    assert "'neck.norm_cfg' has no 'type'" in message
    assert "norm_cfg=dict(type='BN'" in message and 'CBN' in message


def test_unknown_argument_lists_the_accepted_ones_and_its_owner():
    with pytest.raises(TypeError) as err:
        _validate(dict(neck=dict(norm_cfg=dict(type='MABN', buffer_num=3),
                                 conv_cfg=dict(type='CenConv2d'))))
    message = str(err.value)
    assert "'neck.norm_cfg'" in message and "'buffer_num'" in message
    assert "'buffer_num' is an argument of CBN" in message
    assert 'MABN accepts: buffer_size, momentum' in message  # from inspect.signature


def test_unknown_argument_of_bkn_names_bkn():
    with pytest.raises(TypeError) as err:
        _validate(dict(backbone=dict(norm_cfg=dict(type='BKN', buffer_num=3))))
    message = str(err.value)
    assert "type 'BKN'" in message and 'BKN accepts: eps' in message and 'prior_weight' in message


def test_misspelt_argument_gets_the_closest_one():
    with pytest.raises(TypeError, match="did you mean 'num_groups'"):
        _validate(dict(neck=dict(norm_cfg=dict(type='GN', num_group=32))))


def test_accepted_args_follow_build_norm_layer():
    from torch import nn
    assert 'num_channels' not in accepted_norm_args(nn.GroupNorm)  # passed by the builder
    assert accepted_norm_args(nn.BatchNorm2d)[0] == 'eps'  # num_features is positional


@pytest.mark.parametrize('class_name, registered', [('GroupNorm', 'GN'), ('BatchNorm2d', 'BN'),
                                                    ('SyncBatchNorm', 'SyncBN')])
def test_class_name_as_type_says_which_name_to_use(class_name, registered):
    with pytest.raises(KeyError) as err:
        _validate(dict(backbone=dict(bfn_cfg=dict(type=class_name, num_groups=32))))
    assert f"use '{registered}'" in str(err.value)
    assert "'backbone.bfn_cfg'" in str(err.value)


def test_mabn_after_a_plain_conv_warns_with_the_fix():
    messages = _validate(dict(neck=dict(type='FPN', norm_cfg=dict(type='MABN'))))
    assert len(messages) == 1
    assert "MABN at 'neck.norm_cfg' follows plain convolutions" in messages[0]
    assert "conv_cfg=dict(type='CenConv2d')" in messages[0]
    assert not _validate(dict(neck=dict(norm_cfg=dict(type='MABN'),
                                        conv_cfg=dict(type='CenConv2d'))))


@pytest.mark.slow  # loads ~70 configs (20-30 s on 2 busy cores)
def test_every_shipped_config_validates_without_warnings():
    for path in sorted(glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))):
        if '_base_' in path:
            continue
        cfg = Config.fromfile(path)
        assert not _validate(cfg.model), path


def test_train_tool_reports_a_missing_type_before_building(tmp_path):
    cfg = tmp_path / 'bad.py'
    cfg.write_text(f"_base_ = '{ROOT}/configs/baselines/faster-rcnn_r50_fpn_bn_8xb2-1x_coco.py'\n"
                   "model = dict(neck=dict(norm_cfg=dict(_delete_=True, requires_grad=True)))\n")
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(cfg),
                           '--work-dir', str(tmp_path / 'wd')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "'neck.norm_cfg' has no 'type'" in proc.stderr
