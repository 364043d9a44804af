"""CompileNormsHook: mmengine's ``compile`` option compiles the plugin norms, not around them.

What is measured, in runs of mmengine's own ``Runner`` (which wraps ``train_step`` in
``torch.compile(**cfg.compile)`` after the hooks' ``before_run``):

* graph breaks inside the plugin's layers: Dynamo's ``graph_breaks`` log, each record's user
  code location and traceback, attributed to the layers when a frame lies in
  ``mmnorm_plugin/norms/`` or ``mmnorm_plugin/models/layers/``;
* norm calls that Dynamo did not trace: a forward pre-hook on every plugin norm counts its
  calls outside compilation (traced, the count is dead code in the graph). A norm called from a
  frame that Dynamo skipped (a break elsewhere in a loop, say) runs its hook in Python and is
  counted; a break inside a norm resumes after the traced pre-hook, so that is the log's to see.

With the hook both are 0 from the second iteration on (CBN and BKN learn their structure in a
first eager iteration, whose calls are all counted); without it, CBN and BKN break the graph
inside their forwards. The hook changes no result: losses and weights of a compiled run equal
those of an uncompiled one.
"""
import contextlib
import copy
import logging
import math
import os.path as osp
import re
import uuid

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

import mmnorm_plugin
from mmnorm_plugin.engine import CompileNormsHook
from mmnorm_plugin.engine.compile_norms import compile_requested
from mmnorm_plugin.norms.base import NormBase

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PLUGIN_LAYERS = tuple(osp.join(osp.dirname(mmnorm_plugin.__file__), d) + osp.sep
                      for d in ('norms', osp.join('models', 'layers')))
EAGER = dict(backend='eager')


# ------------------------------------------------------------------------------ measurement
class _BreakLog(logging.Handler):
    """Dynamo's graph-break log records: (location, traceback files) per record."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        text = record.getMessage()
        if 'graph break' not in text.lower():
            return
        files = (re.findall(r'File "([^"]+)"', text)
                 + re.findall(r'in user code at (\S+?):\d+', text))
        self.records.append((text.splitlines()[0], files))

    def in_plugin_layers(self):
        return [first for first, files in self.records
                if any(f.startswith(PLUGIN_LAYERS) for f in files)]


@contextlib.contextmanager
def _graph_breaks():
    torch._dynamo.reset()  # compiled code and the log's de-duplication of earlier runs
    handler = _BreakLog()
    logger = logging.getLogger('torch._dynamo')
    torch._logging.set_logs(graph_breaks=True)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()
        torch._dynamo.reset()


class _Watch(Hook):
    """Counts each iteration's eager norm forwards and keeps its loss."""
    priority = 'LOWEST'

    def __init__(self):
        self.eager_calls, self.losses, self.iter = {}, [], -1

    def before_run(self, runner):
        def count(module, args):
            if not torch.compiler.is_compiling():
                self.eager_calls[self.iter] = self.eager_calls.get(self.iter, 0) + 1
        model = runner.model
        self.norms = [m for m in model.modules() if isinstance(m, NormBase)]
        for m in self.norms:
            m.register_forward_pre_hook(count)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iter = runner.iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


def _run(model, data, tmp_path, iters, compile=None, hook=True):
    """Train ``model`` for ``iters`` iterations with mmengine's Runner; returns the watcher,
    the break log and the trained model."""
    watch = _Watch()
    hooks = ([CompileNormsHook()] if hook else []) + [watch]
    loader = DataLoader(data, batch_size=2, shuffle=False, collate_fn=pseudo_collate)
    runner = Runner(
        model=model, work_dir=str(tmp_path / uuid.uuid4().hex), train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, default_scope='mmdet', log_level='WARNING',
        randomness=dict(seed=0), experiment_name=uuid.uuid4().hex,
        cfg=dict(compile=compile))
    with _graph_breaks() as breaks:
        runner.train()
    return watch, breaks, runner.model


def _assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    state, ref = a.state_dict(), b.state_dict()
    assert list(state) == list(ref)
    for key, x in state.items():
        if x.is_floating_point():
            torch.testing.assert_close(x, ref[key], rtol=rtol, atol=atol,
                                       msg=lambda m, key=key: f'{key}: {m}')
        else:
            assert torch.equal(x, ref[key]), key


# --------------------------------------------------------------- a small ResNet, seconds
class _Images(Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(1)
        self.images = [torch.randn(3, 16, 16, generator=g) for _ in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return dict(inputs=self.images[i])


class _Net(BaseModel):
    """mmdet's ResNet (two stages of BasicBlocks: residual sums, downsample convs) + a linear
    head: the norms as ``norm_cfg`` drop-ins, as in a detector."""

    def __init__(self, norm_cfg, conv_cfg=None):
        from mmdet.models.backbones import ResNet
        super().__init__()
        self.backbone = ResNet(depth=18, num_stages=2, strides=(1, 2), dilations=(1, 1),
                               out_indices=(1,), base_channels=8, norm_cfg=norm_cfg,
                               conv_cfg=conv_cfg, norm_eval=False, init_cfg=None)
        self.head = nn.Linear(16, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        out = self.head(self.backbone(x)[-1].mean((2, 3)))
        return dict(loss=out.square().mean()) if mode == 'loss' else out


class _Mixed(BaseModel):
    """The three layers that need the hook's preparation, as ``norm_cfg`` drop-ins in one small
    CNN (one trace for all): MABN after a ``CenConv2d``, CBN with its window from the second
    iteration, and two BKNs, the second chained to the first through a ReLU."""

    def __init__(self):
        from mmcv.cnn import build_conv_layer, build_norm_layer
        super().__init__()
        self.conv1 = build_conv_layer(dict(type='CenConv2d'), 3, 8, 3, padding=1, bias=False)
        self.conv2, self.conv3, self.conv4 = (nn.Conv2d(8, 8, 3, padding=1, bias=False)
                                              for _ in range(3))
        self.mabn = build_norm_layer(dict(type='MABN', buffer_size=2, warmup_iters=1), 8)[1]
        self.cbn = build_norm_layer(dict(type='CBN', buffer_num=2, burnin_iters=1), 8)[1]
        self.bkn1, self.bkn2 = (build_norm_layer(dict(type='BKN'), 8)[1] for _ in range(2))
        self.head = nn.Linear(8, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        x = self.cbn(self.conv2(self.mabn(self.conv1(x)).relu())).relu()
        y = self.bkn2(self.conv4(self.bkn1(self.conv3(x)).relu()))
        out = self.head((x + y).relu().mean((2, 3)))
        return dict(loss=out.square().mean()) if mode == 'loss' else out


def test_norms_compile_without_breaks_and_train_as_uncompiled(tmp_path):
    torch.manual_seed(0)
    net = _Mixed()
    reference = copy.deepcopy(net)
    watch, breaks, model = _run(net, _Images(), tmp_path, iters=3, compile=EAGER)
    assert breaks.in_plugin_layers() == []
    # the first iteration eager (CBN and BKN learn their structure), none after it
    assert watch.eager_calls.get(0, 0) == len(watch.norms) == 4
    assert watch.eager_calls.get(1, 0) == watch.eager_calls.get(2, 0) == 0, watch.eager_calls
    assert int(model.bkn2.prior_status) != 0  # the replayed chain gave bkn2 its prior
    # the same training without compiling: the hook consumed no batch, took no step
    watch_ref, _, ref_model = _run(reference, _Images(), tmp_path, iters=3, compile=None)
    assert watch_ref.eager_calls.get(2) == len(watch_ref.norms)
    torch.testing.assert_close(torch.tensor(watch.losses), torch.tensor(watch_ref.losses),
                               rtol=1e-5, atol=1e-6)
    _assert_same_weights(model, ref_model)


def test_without_the_hook_cbn_and_bkn_break_the_graph(tmp_path, monkeypatch):
    from mmnorm_plugin.norms import cbn as cbn_module
    # as in a fresh process: other tests of this one tapped their models' convs
    monkeypatch.setattr(cbn_module, 'convolutions_tapped', lambda: False)
    torch.manual_seed(0)
    _, breaks, _ = _run(_Mixed(), _Images(), tmp_path, iters=1, compile=EAGER, hook=False)
    files = {osp.basename(f) for _, fs in breaks.records for f in fs
             if f.startswith(PLUGIN_LAYERS)}
    assert 'cbn.py' in files and any(f.startswith('bkn') for f in files), files


@pytest.mark.parametrize('setting', [None, False])
def test_without_compile_the_hook_does_nothing(setting, tmp_path):
    torch.manual_seed(0)
    watch, _, model = _run(_Net(dict(type='BKN')), _Images(), tmp_path, iters=1,
                           compile=setting)
    assert not any(getattr(m, '_mmnorm_tapped', False) for m in model.modules())
    assert 'train_step' not in vars(model)
    assert watch.eager_calls[0] == len(watch.norms)
    assert not compile_requested(dict(compile=setting)) and not compile_requested(dict())
    assert compile_requested(dict(compile=True)) and compile_requested(dict(compile=dict()))


def test_the_hook_is_added_once_next_to_a_configs_own_hooks():
    """``use_compile_norms_hook``, what our train tool calls for a run that compiles
    (tests/test_apis/test_tool_compile_norms.py)."""
    from mmengine.config import Config
    from mmnorm_plugin.engine.compile_norms import use_compile_norms_hook
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cbn',
                                   'faster-rcnn_r50_fpn_cbn-neck-head_8xb2-1x_coco.py'))
    own = [h['type'] for h in cfg.custom_hooks]
    use_compile_norms_hook(cfg)
    use_compile_norms_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == own + ['CompileNormsHook']
    assert 'CBNBurnInHook' in own


def test_the_eager_iteration_is_one_call_then_the_compiled_step_is_back():
    from mmnorm_plugin.engine.compile_norms import _run_next_train_step_eager

    class Model(nn.Module):
        fail = False

        def train_step(self, x):
            if self.fail and not torch.compiler.is_compiling():
                raise ValueError('bad batch')
            return x + 1, torch.compiler.is_compiling()

    model = Model()
    compiled = torch.compile(model.train_step, backend='eager')
    model.train_step = compiled  # what mmengine's Runner does
    _run_next_train_step_eager(model)
    assert model.train_step(torch.zeros(1))[1] is False  # traced: it would be True
    assert model.train_step is compiled
    assert model.train_step(torch.zeros(1))[1] is True
    model.fail = True
    _run_next_train_step_eager(model)
    with pytest.raises(ValueError):
        model.train_step(torch.zeros(1))
    assert model.train_step is compiled  # an error in the eager step leaves mmengine's step
    plain = Model()
    _run_next_train_step_eager(plain)  # no instance attribute: the class's method comes back
    plain.train_step(torch.zeros(1))
    assert 'train_step' not in vars(plain)
    torch._dynamo.reset()


# ------------------------------------------------------------------------ demo detectors
class _DetBatches(Dataset):
    """Two fixed demo images with 3 boxes each, repeated: every compiled iteration sees the
    same shapes, so one trace serves them all (no recompilation for new box counts)."""

    def __init__(self, n=8):
        from mmdet.testing import demo_mm_inputs
        torch.manual_seed(3)
        packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 96, 96)] * 2,
                                num_items=[3, 3], num_classes=3)
        self.samples = [dict(inputs=i, data_samples=d)
                        for i, d in zip(packed['inputs'], packed['data_samples'])]
        # demo_mm_inputs makes scale_factor a numpy array (mmdet's Resize makes it a tuple):
        # mmengine deep-copies metainfo inside the compiled step, and Dynamo (torch 2.13)
        # can raise on an array's __deepcopy__ there instead of breaking the graph (seen in
        # some processes, not others): mmdet's data code, not a norm, so the test keeps it out
        for sample in self.samples:
            sample['data_samples'].set_metainfo(
                {k: tuple(v.tolist()) for k, v in sample['data_samples'].metainfo.items()
                 if isinstance(v, np.ndarray)})
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return copy.deepcopy(self.samples[i % 2])


def _detector():
    """The demo Faster R-CNN with the three layers in one model (one trace): MABN + CenConv2d
    in the backbone, CBN in the FPN (its window from the second iteration), BKN in the box head."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                   'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'))
    cfg.model.backbone.update(norm_cfg=dict(type='MABN', warmup_iters=1),
                              conv_cfg=dict(type='CenConv2d'))
    cfg.model.neck.norm_cfg = dict(type='CBN', buffer_num=2, burnin_iters=1)
    cfg.model.roi_head.bbox_head.norm_cfg = dict(type='BKN')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def _compiled_as_uncompiled(model, data, tmp_path, compile, rtol):
    """Two iterations compiled, then the same uncompiled from a copy: no break inside the
    norms, no eager norm call after the first iteration, the same finite losses. Returns the
    break log and both trained models."""
    reference = copy.deepcopy(model)
    watch, breaks, trained = _run(model, data(), tmp_path, iters=2, compile=compile)
    assert breaks.in_plugin_layers() == []
    assert watch.eager_calls.get(1, 0) == 0, watch.eager_calls
    assert all(math.isfinite(loss) for loss in watch.losses)
    watch_ref, _, ref_trained = _run(reference, data(), tmp_path, iters=2, compile=None)
    torch.testing.assert_close(torch.tensor(watch.losses), torch.tensor(watch_ref.losses),
                               rtol=rtol, atol=1e-5)
    return breaks, trained, ref_trained


@pytest.mark.slow
def test_detector_norms_compile_without_breaks(tmp_path):
    """mmengine's ``compile=dict(backend='eager')`` on a detector with MABN, CBN and BKN:
    mmdet's RPN/RoI code breaks the graph, the norms don't, and the run trains as the
    uncompiled one."""
    detector = _detector()
    names = {type(m).__name__ for m in detector.modules() if isinstance(m, NormBase)}
    assert names == {'MABN', 'CBN', 'BKN'}, names
    breaks, model, ref_model = _compiled_as_uncompiled(detector, _DetBatches, tmp_path, EAGER,
                                                       rtol=1e-5)
    assert breaks.records, 'the detector compiled without any break: the log is not read'
    # compiling moves a few weights by float rounding (MABN: 1.6e-6 in backbone.conv1 after two
    # steps, bit-identical with and without the hook, which only taps convs there)
    _assert_same_weights(model, ref_model, atol=1e-5)


@pytest.mark.slow
def test_inductor_trains_bkn_compiled_without_breaks(tmp_path):
    """The default backend (what ``compile=True`` uses): code generation, needs a C++
    compiler. BKN, the layer that needs both taps and the eager iteration."""
    torch.manual_seed(0)
    _compiled_as_uncompiled(_Net(dict(type='BKN')), _Images, tmp_path, True, rtol=1e-4)


# ------------------------------------------------------------------ an mmpretrain config
def _run_from_base_config(model, data, scope, tmp_path, iters=3):
    """Train with the hooks of ``configs/_base_/compile_norms.py`` (what configs for mmpretrain's
    and mmseg's own tools inherit), built by mmengine from their config entry in ``scope``."""
    from mmengine.config import Config
    hooks = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'compile_norms.py')).custom_hooks
    watch = _Watch()
    runner = Runner(
        model=model, work_dir=str(tmp_path), train_dataloader=DataLoader(
            data, batch_size=2, collate_fn=pseudo_collate),
        train_cfg=dict(by_epoch=False, max_iters=iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks) + [watch], default_scope=scope, log_level='WARNING',
        randomness=dict(seed=0), experiment_name=uuid.uuid4().hex, cfg=dict(compile=EAGER))
    assert any(isinstance(h, CompileNormsHook) for h in runner.hooks)
    with _graph_breaks() as breaks:
        runner.train()
    assert breaks.in_plugin_layers() == []
    assert watch.eager_calls.get(0) == len(watch.norms) > 0  # the eager first iteration
    assert all(watch.eager_calls.get(i, 0) == 0 for i in range(1, iters)), watch.eager_calls
    assert all(math.isfinite(loss) for loss in watch.losses)


class _Labelled(Dataset):
    """uint8 images with a class label."""

    def __init__(self, sample, n=8):
        g = torch.Generator().manual_seed(2)
        self.items = []
        for i in range(n):
            image = torch.randint(0, 256, (3, 24, 24), generator=g, dtype=torch.uint8)
            self.items.append(dict(inputs=image, data_samples=sample(image, i)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return copy.deepcopy(self.items[i])


def test_mmpretrain_classifier_cbn_compiles_without_breaks(tmp_path, mmpretrain):
    """mmpretrain's ImageClassifier with its ResNet, CBN in the backbone."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=2, mean=[128.] * 3,
                               std=[64.] * 3),
        backbone=dict(type='ResNet', depth=18, num_stages=2, strides=(1, 2), dilations=(1, 1),
                      out_indices=(1,), stem_channels=8, base_channels=8,
                      norm_cfg=dict(type='CBN', buffer_num=2, burnin_iters=1),
                      zero_init_residual=False),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=2, in_channels=16,
                  loss=dict(type='CrossEntropyLoss'))))
    data = _Labelled(lambda image, i: DataSample().set_gt_label(i % 2))
    _run_from_base_config(model, data, 'mmpretrain', tmp_path, iters=2)
