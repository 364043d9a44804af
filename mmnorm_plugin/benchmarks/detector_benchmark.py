"""Whole-detector cost of each norm: training iteration and inference, as ratios in one run.

Per-layer numbers (:mod:`.benchmark`) miss what a detector adds (convs, RoI ops, losses) and
what a norm costs beyond its own kernel (CBN's weight-gradient terms, BKN's graph walk), so
:func:`compare_detectors` times whole ``train_step``/``test_step`` calls of mmdet detectors:

* **candidates**: each method's demo config (Faster R-CNN R18-w16 FPN, norm in backbone, FPN
  and 4conv1fc head), switched to its steady state (CBN window on from the first iteration,
  MABN's SMA and renormalization on: :data:`STEADY_STATE`);
* **BN twin**: the same detector with BN in the same places (``*_bn_tiny-coco.py``);
* **frozen BN**: mmdet's default, the twin with frozen backbone statistics (``norm_eval``) and
  no norm in FPN and head;
* **deployed** (inference): each candidate converted with :mod:`mmnorm_plugin.deploy` and folded
  with ``mmcv.cnn.fuse_conv_bn``, against the BN twin folded the same way.

Everything runs interleaved (one step of every model, then the next round), on identical
synthetic batches with the RNG re-seeded per step so that RPN/RoI sampling is identical;
medians of ``iters`` rounds after ``warmup``. On CUDA every step is bracketed by
``torch.cuda.synchronize``.
"""
import copy
import logging
import os.path as osp
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ['COMPILED_PARTS', 'DEMO_CONFIG', 'METHODS', 'STEADY_STATE', 'build_detectors',
           'compare_compiled_detectors', 'compare_detectors', 'compile_norm_parts',
           'compiled_twin',
           'format_compiled_detector_rows', 'format_detector_rows']

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(_ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_{}_tiny-coco.py')
METHODS = ('cbn', 'mabn', 'bgn', 'bkn')
#: norm_cfg overrides that put a method in the state it spends most of training in
STEADY_STATE = {'cbn': dict(burnin_iters=0), 'mabn': dict(warmup_iters=0, renorm_hold_iters=0)}
_PARTS = ('backbone', 'neck', 'roi_head.bbox_head')


def _part(model_cfg, path):
    for key in path.split('.'):
        model_cfg = model_cfg[key]
    return model_cfg


def _model_cfgs(methods: Sequence[str]) -> Dict[str, object]:
    from mmengine.config import Config
    cfgs = {}
    for method in methods:
        model = Config.fromfile(DEMO_CONFIG.format(method)).model
        for part in _PARTS:
            _part(model, part).norm_cfg.update(STEADY_STATE.get(method, {}))
        cfgs[method.upper()] = model
    twin = Config.fromfile(DEMO_CONFIG.format('bn')).model
    cfgs['BN twin'] = twin
    frozen = copy.deepcopy(twin)
    frozen.backbone.norm_eval = True
    frozen.neck.norm_cfg = None
    frozen.roi_head.bbox_head.norm_cfg = None
    cfgs['frozen BN'] = frozen
    return cfgs


def build_detectors(methods: Sequence[str] = METHODS, device: str = 'cpu') -> Dict[str, object]:
    """The detectors compared: one per method, the BN twin and the frozen-BN baseline."""
    import mmnorm_plugin  # noqa: F401  (registers the norms)
    from mmdet.registry import MODELS
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    logger = MMLogger.get_current_instance()
    level = logger.level
    models = {}
    try:
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter
        for name, cfg in _model_cfgs(methods).items():
            torch.manual_seed(0)
            model = MODELS.build(cfg)
            model.init_weights()
            models[name] = model.to(device)
    finally:
        logger.setLevel(level)
    return models


def _deployed(model):
    from mmcv.cnn import fuse_conv_bn
    from mmnorm_plugin.deploy import convert_norms_to_bn
    return fuse_conv_bn(convert_norms_to_bn(copy.deepcopy(model)).eval())


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _medians(jobs, warmup: int, iters: int, device) -> dict:
    """Median seconds of every job over ``iters`` interleaved rounds after ``warmup``."""
    times = {k: [] for k in jobs}
    for i in range(warmup + iters):
        _round(jobs, times, i, device, record=i >= warmup)
    return {k: statistics.median(v) for k, v in times.items()}


def _round(jobs: Dict[str, callable], times: Dict[str, List[float]], seed: int, device: str,
           record: bool) -> None:
    for name, job in jobs.items():
        torch.manual_seed(seed)
        _sync(device)
        t0 = time.perf_counter()
        job()
        _sync(device)
        if record:
            times[name].append(time.perf_counter() - t0)


def compare_detectors(methods: Sequence[str] = METHODS,
                      image_size: Tuple[int, int] = (160, 160),
                      batch: int = 2,
                      iters: int = 5,
                      warmup: int = 3,
                      device: str = 'cpu',
                      modes: Sequence[str] = ('train', 'infer'),
                      num_objects: int = 3) -> List[dict]:
    """Median seconds per ``train_step`` / ``test_step`` of each detector, with ratios.

    Returns rows ``dict(mode, name, ms, x_twin, x_frozen)``: ``x_twin`` is against the BN twin
    (for inference: against the *folded* BN twin, the cost a deployed BN model has),
    ``x_frozen`` against frozen BN (folded for inference).
    """
    from mmcv.cnn import fuse_conv_bn
    from mmdet.testing import demo_mm_inputs

    if iters < 3:
        raise ValueError(f'iters={iters}: a median of fewer than 3 timings is noise')
    models = build_detectors(methods, device)
    h, w = image_size
    packed = demo_mm_inputs(batch_size=batch, image_shapes=[(3, h, w)] * batch,
                            num_items=[num_objects] * batch, num_classes=3)
    rows = []
    if 'train' in modes:
        optims = {k: _sgd(m) for k, m in models.items()}
        for m in models.values():
            m.train()
        jobs = {k: (lambda k=k: models[k].train_step(copy.deepcopy(packed), optims[k]))
                for k in models}
        med = _medians(jobs, warmup, iters, device)
        for k in jobs:
            rows.append(dict(mode='train', name=k, ms=1e3 * med[k],
                             x_twin=med[k] / med['BN twin'], x_frozen=med[k] / med['frozen BN']))
    if 'infer' in modes:
        infer = {}
        for k, m in models.items():
            m.eval()
            if k.lower() in methods:
                infer[k] = m
                infer[f'{k} deployed'] = _deployed(m)
        infer['BN twin'] = models['BN twin']
        infer['BN twin folded'] = fuse_conv_bn(copy.deepcopy(models['BN twin']))
        infer['frozen BN folded'] = fuse_conv_bn(copy.deepcopy(models['frozen BN']))

        def job(model):
            with torch.no_grad():
                model.test_step(copy.deepcopy(packed))

        jobs = {k: (lambda m=m: job(m)) for k, m in infer.items()}
        med = _medians(jobs, warmup, iters, device)
        for k in jobs:
            rows.append(dict(mode='infer', name=k, ms=1e3 * med[k],
                             x_twin=med[k] / med['BN twin folded'],
                             x_frozen=med[k] / med['frozen BN folded']))
    return rows


def format_detector_rows(rows: List[dict], title: Optional[str] = None) -> str:
    header = f'{"mode":<7}{"detector":<20}{"ms/iter":>10}{"x BN twin":>11}{"x frozen BN":>13}'
    lines = ([title] if title else []) + [header, '-' * len(header)]
    for r in rows:
        lines.append(f'{r["mode"]:<7}{r["name"]:<20}{r["ms"]:>10.1f}{r["x_twin"]:>11.2f}'
                     f'{r["x_frozen"]:>13.2f}')
    return '\n'.join(lines)


#: the detector parts that hold the norms; torch.compile'd with fullgraph=True. RPN sampling,
#: RoIAlign (an mmcv op), NMS and the losses stay eager: they are the same in every arm.
COMPILED_PARTS = ('backbone', 'neck', 'roi_head.bbox_head')


def compile_norm_parts(model, backend: str = 'inductor', parts: Sequence[str] = COMPILED_PARTS):
    """Replace each of ``parts`` of an mmdet detector by ``torch.compile(part, fullgraph=True)``
    in place (the parameters stay the same objects, so an optimizer built before still steps
    them). The convs must be tapped and one eager step taken first (see
    :func:`~mmnorm_plugin.norms.conv_origin.tap_convolutions`)."""
    for path in parts:
        *parents, leaf = path.split('.')
        owner = model
        for key in parents:
            owner = getattr(owner, key)
        setattr(owner, leaf, torch.compile(getattr(owner, leaf), backend=backend, fullgraph=True))
    return model


def _sgd(model):
    from mmengine.optim import OptimWrapper
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9))


def compiled_twin(eager, eager_optim, packed, backend: str = 'inductor', seed: int = 0):
    """Prepare ``eager`` (an mmdet detector in training mode) for compiling and return a
    compiled copy with its own optimizer: ``(model, model_optim)``.

    The convs are tapped and one eager ``train_step`` on ``packed`` is taken (BKN records its
    layer chain); model and optimizer are deep-copied together, so the copy's optimizer steps
    the copy's parameters with momentum buffers of its own, and the copy gets
    :func:`compile_norm_parts`.
    """
    from mmengine.optim import OptimWrapper
    from ..norms.conv_origin import tap_convolutions
    tap_convolutions(eager)
    torch.manual_seed(seed)
    eager.train_step(copy.deepcopy(packed), eager_optim)
    model, optimizer = copy.deepcopy((eager, eager_optim.optimizer))
    torch._dynamo.reset()
    compile_norm_parts(model, backend)
    return model, OptimWrapper(optimizer)


def compare_compiled_detectors(methods: Sequence[str] = METHODS,
                               image_size: Tuple[int, int] = (160, 160),
                               batch: int = 2,
                               iters: int = 5,
                               warmup: int = 2,
                               device: str = 'cpu',
                               backend: str = 'inductor',
                               num_objects: int = 3) -> List[dict]:
    """Whole-detector training iteration, eager against the norm-bearing parts compiled.

    Per detector (each method's and the BN twin): the convs are tapped, one eager
    ``train_step`` is taken (BKN records its layer chain), a deep copy gets
    :func:`compile_norm_parts`; its first step is timed alone (``compile_s``: tracing and code
    generation, graph breaks would raise), then ``iters`` interleaved eager/compiled steps
    after ``warmup``. Rows: ``name``, ``eager_ms``, ``compiled_ms`` (medians), ``speedup``
    (eager / compiled, > 1: compiled faster), ``compile_s``.
    """
    from mmdet.testing import demo_mm_inputs

    if iters < 3:
        raise ValueError(f'iters={iters}: a median of fewer than 3 timings is noise')
    h, w = image_size
    packed = demo_mm_inputs(batch_size=batch, image_shapes=[(3, h, w)] * batch,
                            num_items=[num_objects] * batch, num_classes=3)
    rows = []
    for name, eager in build_detectors(methods, device).items():
        if name == 'frozen BN':
            continue
        eager_optim = _sgd(eager.train())
        model, model_optim = compiled_twin(eager, eager_optim, packed, backend)
        jobs = {'eager': lambda: eager.train_step(copy.deepcopy(packed), eager_optim),
                'compiled': lambda: model.train_step(copy.deepcopy(packed), model_optim)}
        torch.manual_seed(0)
        _sync(device)
        t0 = time.perf_counter()
        jobs['compiled']()
        _sync(device)
        compile_s = time.perf_counter() - t0
        med = _medians(jobs, warmup, iters, device)
        rows.append(dict(name=name, eager_ms=1e3 * med['eager'],
                         compiled_ms=1e3 * med['compiled'],
                         speedup=med['eager'] / med['compiled'], compile_s=compile_s))
    torch._dynamo.reset()
    return rows


def format_compiled_detector_rows(rows: List[dict], title: Optional[str] = None) -> str:
    header = (f'{"detector":<10}{"eager ms":>10}{"compiled ms":>13}{"eager/compiled":>16}'
              f'{"compile s":>11}')
    lines = ([title] if title else []) + [header, '-' * len(header)]
    for r in rows:
        lines.append(f'{r["name"]:<10}{r["eager_ms"]:>10.1f}{r["compiled_ms"]:>13.1f}'
                     f'{r["speedup"]:>16.2f}{r["compile_s"]:>11.1f}')
    return '\n'.join(lines)
