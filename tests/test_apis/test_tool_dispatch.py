"""Our tools/train.py and tools/test.py run the tools of the config's codebase: mmdet's, or
mmpretrain's for default_scope='mmpretrain' (mmnorm_plugin.apis.mmdet_tools)."""
import importlib
import os.path as osp

import pytest

from mmnorm_plugin.apis import mmdet_tools
from mmnorm_plugin.apis.mmdet_tools import load_mmdet_tool, run_mmdet_tool, tool_package

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSIFIER = osp.join(ROOT, 'configs', 'pretrain', 'resnet50_bgn_8xb2-acc16_in1k.py')
DETECTOR = osp.join(ROOT, 'configs', 'bgn', 'faster-rcnn_r50_fpn_bgn-all_8xb2-1x_coco.py')


def test_the_scope_picks_the_package():
    assert tool_package('mmpretrain') == 'mmpretrain'
    assert tool_package('mmdet') == tool_package(None) == tool_package('mmfoo') == 'mmdet'
    assert mmdet_tools._scope_named_first([CLASSIFIER, '--work-dir', 'x']) == 'mmpretrain'
    assert mmdet_tools._scope_named_first([DETECTOR]) == 'mmdet'
    # not a file: mmdet's tool parses, and its own checks report
    assert mmdet_tools._scope_named_first(['--work-dir', 'x', CLASSIFIER]) == 'mmdet'


def test_an_mmpretrain_config_gets_mmpretrains_tools(mmpretrain):
    for name in ('train', 'test'):
        tool = load_mmdet_tool(name, 'mmpretrain')
        assert tool['__file__'].endswith(osp.join('mmpretrain', '.mim', 'tools', f'{name}.py'))
        assert tool['main'].__globals__ is not load_mmdet_tool(name)['main'].__globals__


def test_a_config_read_as_another_codebases_ends_the_run_in_one_line(tmp_path):
    pytest.importorskip('mmpretrain')
    with pytest.raises(SystemExit) as err:
        run_mmdet_tool('train', ['--work-dir', str(tmp_path), CLASSIFIER])
    message = str(err.value)
    assert "runs in mmpretrain (default_scope='mmpretrain') but was read as mmdet's" in message
    assert 'name the config first' in message
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_codebase_that_does_not_import_says_how_to_install_it(monkeypatch):
    real = importlib.import_module

    def no_torchvision(name, *args):
        if name == 'mmpretrain.utils':
            raise ModuleNotFoundError("No module named 'torchvision'")
        return real(name, *args)

    monkeypatch.setattr(mmdet_tools.importlib, 'import_module', no_torchvision)
    with pytest.raises(SystemExit) as err:
        run_mmdet_tool('train', [CLASSIFIER])
    assert str(err.value) == (
        "train.py: configs of default_scope='mmpretrain' run in mmpretrain, which does not "
        "import (No module named 'torchvision'); install it: "
        '`MMNORM_EXTRAS=pretrain make install`')
