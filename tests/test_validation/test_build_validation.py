"""The norm config check on every build path once the plugin is imported (issue 21).

mmdet's ``init_detector``, ``DetInferencer``, its shipped ``tools/train.py``/``test.py`` and a
bare ``MODELS.build`` used to fail with mmcv's ``Cannot find None in registry``, the unsynced
class's ``TypeError`` or a BGN error without a config path; they now give the messages of
:func:`mmnorm_plugin.validate_norm_cfgs`.
"""
import os.path as osp
import subprocess
import sys
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import init_default_scope

import mmnorm_plugin  # noqa: F401  (installs the check)
from mmnorm_plugin.apis.mmdet_tools import MMDET_TOOLS
from mmnorm_plugin.validation import norm_cfg as norm_cfg_module

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo')
TYPO = "Unknown norm type 'CBNN' at 'neck.norm_cfg'. Did you mean 'CBN'?"


def _config(tmp_path, base, body, name='bad.py'):
    path = tmp_path / name
    path.write_text(f"_base_ = '{osp.join(DEMO, base)}'\n{body}\n")
    return str(path)


def _typo_config(tmp_path):
    return _config(tmp_path, 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py',
                   "model = dict(neck=dict(norm_cfg=dict(type='CBNN')))")


def _init_detector(path):
    from mmdet.apis import init_detector
    init_detector(path, device='cpu')


def _det_inferencer(path):
    from mmdet.apis import DetInferencer
    DetInferencer(model=path, device='cpu')


def _mmdet_models_build(path):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    MODELS.build(Config.fromfile(path).model)


def _root_models_build(path):  # what mmengine's Runner calls
    init_default_scope('mmdet')
    ROOT_MODELS.build(Config.fromfile(path).model)


BUILD_PATHS = [_init_detector, _det_inferencer, _mmdet_models_build, _root_models_build]


@pytest.mark.parametrize('build', BUILD_PATHS, ids=lambda f: f.__name__)
def test_unknown_type_is_named_on_every_build_path(tmp_path, build):
    with pytest.raises(KeyError) as err:
        build(_typo_config(tmp_path))
    assert TYPO in str(err.value)
    assert 'Cannot find None' not in str(err.value)


@pytest.mark.parametrize('build', BUILD_PATHS, ids=lambda f: f.__name__)
def test_synced_variant_argument_error_names_the_synced_class(tmp_path, build):
    path = _config(tmp_path, 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py',
                   "model = dict(neck=dict(norm_cfg=dict(type='SyncCBN', window=4)))")
    with pytest.raises(TypeError) as err:
        build(path)
    message = str(err.value)
    assert "'neck.norm_cfg' (type 'SyncCBN') has argument(s) 'window'" in message
    assert 'SyncCBN accepts:' in message and 'process_group' in message
    assert 'CBN.__init__()' not in message


@pytest.mark.parametrize('build', BUILD_PATHS, ids=lambda f: f.__name__)
def test_group_count_that_does_not_divide_names_the_config_path(tmp_path, build):
    # the demo's FPN has 64 channels; only the neck's entry sets 30 groups
    path = _config(tmp_path, 'faster-rcnn_r18-w16_fpn_bgn_tiny-coco.py',
                   "model = dict(neck=dict(norm_cfg=dict(num_groups=30)))")
    with pytest.raises(ValueError) as err:
        build(path)
    message = str(err.value)
    assert 'num_groups=30 does not divide num_features=64' in message
    assert "Set at 'neck.norm_cfg' in the model config" in message
    assert 'backbone.norm_cfg' not in message  # 8 groups there, which divide its widths


def test_default_group_count_is_named_as_the_default():
    init_default_scope('mmdet')
    cfg = dict(type='ResNet', depth=18, base_channels=24, init_cfg=None,
               norm_cfg=dict(type='BGN'))  # 32 groups do not divide 24
    with pytest.raises(ValueError, match=r"Set at 'norm_cfg' \(num_groups=32, the default\)"):
        ROOT_MODELS.build(cfg)


def test_inherited_argument_of_another_norm_points_to_delete(tmp_path):
    # the CBN demo's norm_cfg carries buffer_num/burnin_iters; swapping only its type keeps them
    swapped = _config(tmp_path, 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py',
                      "model = dict(neck=dict(norm_cfg=dict(type='BN')))")
    with pytest.raises(TypeError) as err:
        _mmdet_models_build(swapped)
    message = str(err.value)
    assert "'buffer_num' is an argument of CBN" in message
    assert "norm_cfg=dict(_delete_=True, type='BN', ...)" in message
    fixed = _config(tmp_path, 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py',
                    "model = dict(neck=dict(norm_cfg=dict(_delete_=True, type='BN')))",
                    name='fixed.py')
    _mmdet_models_build(fixed)  # the fix the message names builds


def test_a_typo_is_not_told_to_delete():
    with pytest.raises(TypeError) as err:
        mmnorm_plugin.validate_norm_cfgs(dict(neck=dict(norm_cfg=dict(type='GN', num_group=8))))
    assert "did you mean 'num_groups'" in str(err.value)
    assert '_delete_' not in str(err.value)


def test_installed_once_on_the_model_registries():
    from mmdet.registry import MODELS
    assert ROOT_MODELS.build_func._mmnorm_validating
    assert MODELS.build_func is ROOT_MODELS.build_func
    before = ROOT_MODELS.build_func
    mmnorm_plugin.validation.norm_cfg.install_build_validation()
    assert ROOT_MODELS.build_func is before  # idempotent: not wrapped twice


def test_valid_model_builds_as_before_and_is_checked_once(monkeypatch):
    """Same modules and weights as the unwrapped build; one check per model, not per part."""
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(DEMO, 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py')).model
    checks = []
    check = norm_cfg_module._check_norm_cfgs
    monkeypatch.setattr(norm_cfg_module, '_check_norm_cfgs',
                        lambda c, scope: (checks.append(c), check(c, scope)))
    torch.manual_seed(0)
    wrapped = MODELS.build(cfg)
    assert len(checks) == 1  # backbone, neck, heads, losses... are nested builds
    torch.manual_seed(0)
    plain = MODELS.build_func.__wrapped__(cfg, registry=MODELS)
    assert [type(m) for m in wrapped.modules()] == [type(m) for m in plain.modules()]
    wrapped_state, plain_state = wrapped.state_dict(), plain.state_dict()
    assert list(wrapped_state) == list(plain_state)
    for key, value in wrapped_state.items():
        assert torch.equal(value, plain_state[key]), key


def test_mabn_warning_is_given_once_per_process():
    init_default_scope('mmdet')
    cfg = dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=2,
               norm_cfg=dict(type='MABN'))
    norm_cfg_module._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        mmnorm_plugin.validate_norm_cfgs(cfg)  # what our tools call first
        ROOT_MODELS.build(cfg)  # the Runner's build of the same model
        ROOT_MODELS.build(cfg)
    messages = [str(w.message) for w in caught if 'follows plain convolutions' in str(w.message)]
    assert len(messages) == 1, messages
    norm_cfg_module._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:  # a bare build warns by itself
        warnings.simplefilter('always')
        ROOT_MODELS.build(cfg)
    assert any('follows plain convolutions' in str(w.message) for w in caught)


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_mmdets_shipped_tools_report_the_config_path(tmp_path, tool):
    """mmdet's own tools import the plugin only through the config's custom_imports."""
    args = [_typo_config(tmp_path)]
    if tool == 'test':
        args.append(str(tmp_path / 'never_loaded.pth'))  # the Runner builds the model first
    proc = subprocess.run([sys.executable, osp.join(MMDET_TOOLS, f'{tool}.py'), *args,
                           '--work-dir', str(tmp_path / 'wd')], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert TYPO in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize('tool, args, line', [
    ('train', ['missing.py'], 'train.py: config file not found: missing.py'),
    ('test', [osp.join(DEMO, 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'), 'missing.pth'],
     'test.py: checkpoint not found: missing.pth'),
    ('train', [osp.join(DEMO, 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'), '--resume',
               'missing.pth'], 'train.py: checkpoint to resume not found: missing.pth'),
    # a set that was never generated: named, with the command that makes it, before the Runner
    ('train', [osp.join(DEMO, 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py')],
     'train.py: train_dataloader reads data/tiny_coco/annotations/instances_train.json, which '
     'does not exist: `make data` generates it'),
    ('train', [osp.join(ROOT, 'configs', 'baselines', 'faster-rcnn_r50_fpn_bn_8xb2-1x_coco.py')],
     'train.py: train_dataloader reads data/coco/annotations/instances_train2017.json, which '
     "does not exist: check the config's data_root and ann_file (COCO: docs/coco.md)"),
])
def test_our_tools_report_a_missing_path_in_one_line(tmp_path, tool, args, line):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', f'{tool}.py'), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.strip() and 'Warning' not in ln and 'import pkg_resources' not in ln]
    assert errors == [line], proc.stderr[-3000:]


def test_image_normalization_is_not_a_norm_layer():
    """mmdet's StrongSORT configs carry img_norm_cfg (mean/std, no type); they build as before."""
    model = dict(tracker=dict(reid=dict(img_norm_cfg=dict(mean=[0.0], std=[1.0], to_rgb=True),
                                        new_img_norm_cfg=dict(mean=[0.0], std=[1.0]))))
    mmnorm_plugin.validate_norm_cfgs(model)


def test_a_norm_registered_in_another_scope_is_left_to_that_scope():
    """A norm of another package's registry (mmpretrain's LN2d under a 'mmpretrain.ConvNeXt'
    backbone) may resolve where the sub-model is built: no false alarm from mmdet's scope."""
    from mmengine.registry import Registry
    other = Registry('model', parent=ROOT_MODELS, scope='mmnorm_test_scope')
    try:
        other.register_module(name='OtherScopeNorm', module=torch.nn.BatchNorm2d)
        init_default_scope('mmdet')
        mmnorm_plugin.validate_norm_cfgs(dict(backbone=dict(norm_cfg=dict(type='OtherScopeNorm'))))
        with pytest.raises(KeyError, match="Unknown norm type 'OtherScopeNorn'"):  # a typo still
            mmnorm_plugin.validate_norm_cfgs(dict(norm_cfg=dict(type='OtherScopeNorn')))
    finally:
        ROOT_MODELS.children.pop('mmnorm_test_scope', None)
