"""Our tools/train.py gives a run that sets ``compile`` the CompileNormsHook, in configs of every
scope it runs (mmdet's, mmpretrain's, mmseg's), and leaves a run without ``compile`` as it was
(mmnorm_plugin.apis.mmdet_tools).

The tool runs in this process (``run_mmdet_tool``, what tools/train.py calls) up to the Runner
that mmdet's or mmpretrain's ``main`` builds; its ``train`` records the Runner instead of
training, except in the one run that trains the BKN demo detector for an iteration.
"""
import os.path as osp
import sys

import pytest
from mmengine.runner import Runner

from mmnorm_plugin.apis.mmdet_tools import run_mmdet_tool
from mmnorm_plugin.engine import CompileNormsHook

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_{}_tiny-coco.py')
CLASSIFIER = osp.join(ROOT, 'configs', 'pretrain', 'resnet50_cbn_8xb2_in1k.py')
# a segmentor with BKN in backbone and head; no data: the Runner is built, never trained
SEGMENTOR = """
default_scope = 'mmseg'
norm_cfg = dict(type='BKN')
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[128.] * 3, std=[64.] * 3),
    backbone=dict(type='ResNetV1c', depth=18, num_stages=2, strides=(1, 2), dilations=(1, 1),
                  out_indices=(1,), stem_channels=8, base_channels=8, norm_cfg=norm_cfg),
    decode_head=dict(type='FCNHead', in_channels=16, in_index=0, channels=16, num_convs=1,
                     num_classes=2, norm_cfg=norm_cfg,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_dataloader = dict(batch_size=2, dataset=dict(type='BaseSegDataset', pipeline=[]),
                        sampler=dict(type='InfiniteSampler'))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
"""


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """A folder with the demo configs' data/tiny_coco (two training images)."""
    from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco
    path = tmp_path_factory.mktemp('tool_compile')
    make_tiny_coco(str(path / 'data' / 'tiny_coco'), num_train=2, num_val=1)
    return path


@pytest.fixture
def train_tool(monkeypatch, tmp_path, data_dir):
    """``train_tool(config, *options, train=False)``: the Runner our train tool builds for
    ``config``, run from ``data_dir``; trained only with ``train=True``."""
    monkeypatch.setattr(sys, 'argv', list(sys.argv))  # run_mmdet_tool sets the tool's argv
    monkeypatch.chdir(data_dir)
    real_train = Runner.train
    runners = []

    def run(config, *options, train=False):
        def record(runner):
            runners.append(runner)
            if train:
                real_train(runner)
        monkeypatch.setattr(Runner, 'train', record)
        run_mmdet_tool('train', [config, '--work-dir', str(tmp_path / f'work{len(runners)}'),
                                 *options])
        return runners[-1]
    return run


def _compile_hooks(runner):
    return [h for h in runner.hooks if isinstance(h, CompileNormsHook)]


@pytest.mark.parametrize('compile', ['compile=True', 'compile.backend=eager'])
def test_a_compiled_run_of_an_mmdet_config_gets_the_hook(train_tool, compile):
    runner = train_tool(DEMO.format('cbn'), '--cfg-options', compile)
    assert len(_compile_hooks(runner)) == 1
    names = [type(h).__name__ for h in runner.hooks]
    assert {'GuardedCheckpointLoadHook', 'WeightsOnlyCheckpointHook'} <= set(names)  # kept
    assert 'CompileNormsHook' in runner.cfg.pretty_text  # in the config the Runner dumps


@pytest.mark.parametrize('compile', [None, 'False', 'None'])
def test_a_run_without_compile_is_left_as_it_was(train_tool, compile):
    options = [] if compile is None else ['--cfg-options', f'compile={compile}']
    runner = train_tool(DEMO.format('cbn'), *options)
    assert _compile_hooks(runner) == []
    assert 'CompileNormsHook' not in runner.cfg.pretty_text


def test_a_compiled_run_of_an_mmpretrain_config_gets_the_hook(train_tool, mmpretrain):
    runner = train_tool(CLASSIFIER, '--cfg-options', 'compile=True')
    assert runner.cfg.default_scope == 'mmpretrain'
    assert len(_compile_hooks(runner)) == 1
    assert 'CBNBurnInHook' in [type(h).__name__ for h in runner.hooks]


def test_a_compiled_run_of_an_mmseg_config_gets_the_hook(train_tool, tmp_path):
    pytest.importorskip('mmseg.models', reason='mmsegmentation is the .[seg] extra')
    config = tmp_path / 'fcn_r18-w8_bkn.py'
    config.write_text(SEGMENTOR)
    runner = train_tool(str(config), '--cfg-options', 'compile=True')
    assert runner.cfg.default_scope == 'mmseg'
    assert len(_compile_hooks(runner)) == 1
    assert _compile_hooks(train_tool(str(config))) == []


def test_the_hook_of_a_tool_run_prepares_the_norms(train_tool):
    """A real training iteration of the BKN demo detector through the tool with
    ``--cfg-options compile.backend=eager``: the hook tapped the convs and ran the first iteration
    eager (which it must, for BKN to record its layer chains), then gave mmengine's compiled
    ``train_step`` back. (The compiled iterations after it: tests/test_engine.)"""
    runner = train_tool(
        DEMO.format('bkn'), '--cfg-options', 'compile.backend=eager',
        'train_cfg.max_iters=1', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', train=True)
    assert runner.iter == 1
    model = runner.model
    assert any(getattr(m, '_mmnorm_tapped', False) for m in model.modules())
    # mmengine's compiled step is back in place (the hook's eager wrapper ran and stepped aside)
    assert 'train_step' in vars(model) and hasattr(model.train_step, '_torchdynamo_orig_callable')
