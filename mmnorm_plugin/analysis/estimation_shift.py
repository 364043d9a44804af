"""Estimation shift of BatchNorm layers (Huang et al., CVPR 2022, arXiv 2203.10778).

At test time a BN layer normalizes with its running (population) statistics, estimated during
training. The paper calls the difference between these estimates and the statistics the layer's
input really has at test time the *estimation shift*, and shows that it accumulates with depth:
the input of a BN is produced by all earlier BNs in eval mode, so their errors add up. A
batch-free norm (XBNBlock's GroupNorm) re-normalizes each sample and stops the accumulation.

Measurement (what :func:`estimation_shift` does): run the model in **eval mode** on N batches,
and for every ``_BatchNorm`` layer with running statistics accumulate the first two moments of
its input per channel over all batches (float64):

* expected mean ``mu* = E[x]`` over all N batches (= the mean of the batch means for
  equal-size batches), expected variance ``var* = E[x^2] - mu*^2`` (the pooled population
  variance: mean within-batch variance plus the variance of the batch means);
* ``mean_l2 = ||mu_hat - mu*||_2`` and ``var_l2 = ||var_hat - var*||_2`` over channels (the
  magnitude of the shift of the statistics themselves, ``mu_hat``/``var_hat`` the running ones);
* scale-free versions, comparable across layers and widths, root-mean-square over channels:
  ``mean_shift = RMS((mu_hat - mu*) / sqrt(var* + eps))`` (the offset, in units of the true
  standard deviation, that the layer adds to its normalized output) and
  ``var_shift = RMS(var_hat / var* - 1)`` (the relative error of the variance estimate).

The raw magnitudes follow the paper's description; the scale-free versions are our addition so
that layers of different scale can be compared on one plot (the paper's exact normalization was
not verified here).
"""
import contextlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, List, Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    'ShiftRecord', 'MomentCollector', 'estimation_shift', 'format_shift_table', 'plot_shift',
    'measure_config'
]


@dataclass
class ShiftRecord:
    """Estimation shift of one BN layer; ``depth`` is its position in forward order."""
    depth: int
    name: str
    num_features: int
    num_values: int
    mean_l2: float
    var_l2: float
    mean_shift: float
    var_shift: float

    def as_dict(self) -> Dict:
        return asdict(self)


class MomentCollector:
    """Forward pre-hooks on ``_BatchNorm`` layers accumulating per-channel input moments.

    Use as a context manager; the hooks are removed on exit. Layers without running statistics
    (``track_running_stats=False``) have no estimate to shift and are skipped.
    """

    def __init__(self, model: nn.Module, layer_types=(_BatchNorm, )):
        self.layers = OrderedDict(
            (name, m) for name, m in model.named_modules()
            if isinstance(m, layer_types) and getattr(m, 'running_mean', None) is not None
            and getattr(m, 'running_var', None) is not None)
        self._sum: Dict[str, torch.Tensor] = {}
        self._sumsq: Dict[str, torch.Tensor] = {}
        self._count: Dict[str, int] = {}
        self._order: List[str] = []
        self._hooks = contextlib.ExitStack()

    def _hook(self, name):

        def hook(module, args):
            x = args[0].detach()
            if x.numel() == 0:  # e.g. a head BN that saw no RoI
                return
            x = x.transpose(0, 1).reshape(x.shape[1], -1).double()
            if name not in self._count:
                self._order.append(name)
                self._sum[name] = x.new_zeros(x.shape[0])
                self._sumsq[name] = x.new_zeros(x.shape[0])
                self._count[name] = 0
            self._sum[name] += x.sum(1)
            self._sumsq[name] += (x * x).sum(1)
            self._count[name] += x.shape[1]

        return hook

    def __enter__(self):
        for name, layer in self.layers.items():
            self._hooks.callback(layer.register_forward_pre_hook(self._hook(name)).remove)
        return self

    def __exit__(self, *exc):
        self._hooks.close()

    def records(self) -> List[ShiftRecord]:
        """One :class:`ShiftRecord` per layer that saw data, in forward order."""
        out = []
        for depth, name in enumerate(self._order):
            layer = self.layers[name]
            n = self._count[name]
            mean = self._sum[name] / n
            var = (self._sumsq[name] / n - mean * mean).clamp_min(0)
            run_mean = layer.running_mean.detach().double().cpu()
            run_var = layer.running_var.detach().double().cpu()
            mean, var = mean.cpu(), var.cpu()
            eps = float(getattr(layer, 'eps', 1e-5))
            out.append(ShiftRecord(
                depth=depth, name=name, num_features=mean.numel(), num_values=n,
                mean_l2=float(torch.linalg.vector_norm(run_mean - mean)),
                var_l2=float(torch.linalg.vector_norm(run_var - var)),
                mean_shift=_rms((run_mean - mean) / (var + eps).sqrt()),
                var_shift=_rms(run_var / (var + eps) - 1)))
        return out


def _rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


@torch.no_grad()
def estimation_shift(model: nn.Module, batches: Iterable,
                     forward_fn: Optional[Callable] = None) -> List[ShiftRecord]:
    """Measure every BN layer's estimation shift over ``batches`` (see the module docstring).

    Args:
        model: any module; it runs in eval mode (its previous mode is restored afterwards), so
            every BN normalizes with its running statistics, as at test time.
        batches: iterable of inputs, each passed to ``forward_fn``.
        forward_fn: ``forward_fn(batch)`` runs the model; default ``model(batch)``. For mmdet
            detectors pass ``model.test_step`` (data preprocessing + prediction).

    Raises:
        ValueError: no batch reached a BN layer.
    """
    forward_fn = model if forward_fn is None else forward_fn
    was_training = model.training
    model.eval()
    try:
        with MomentCollector(model) as collector:
            for batch in batches:
                forward_fn(batch)
    finally:
        model.train(was_training)
    records = collector.records()
    if not records:
        raise ValueError('no BatchNorm layer with running statistics received data (is the '
                         'model BN-free, or were there no batches?)')
    return records


def format_shift_table(records: List[ShiftRecord]) -> str:
    """Fixed-width per-layer table, forward order."""
    width = max(len('layer'), *(len(r.name) for r in records))
    header = (f"{'depth':>5}  {'layer':<{width}}  {'C':>5}  {'mean_l2':>10}  {'var_l2':>10}  "
              f"{'mean_shift':>10}  {'var_shift':>10}")
    lines = [header, '-' * len(header)]
    for r in records:
        lines.append(f'{r.depth:>5}  {r.name:<{width}}  {r.num_features:>5}  '
                     f'{r.mean_l2:>10.4g}  {r.var_l2:>10.4g}  {r.mean_shift:>10.4g}  '
                     f'{r.var_shift:>10.4g}')
    return '\n'.join(lines)


def plot_shift(records: List[ShiftRecord], path: str, title: str = '') -> str:
    """Save a plot of the scale-free shifts against BN depth (matplotlib, Agg backend)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    depth = [r.depth for r in records]
    fig, ax = plt.subplots(figsize=(max(6.0, min(18.0, 0.12 * len(records))), 4))
    ax.plot(depth, [r.mean_shift for r in records], marker='.', label='mean shift (RMS, in std)')
    ax.plot(depth, [r.var_shift for r in records], marker='.', label='variance shift (RMS, rel.)')
    ax.set_xlabel('BN layer (forward order)')
    ax.set_ylabel('estimation shift')
    values = [v for r in records for v in (r.mean_shift, r.var_shift) if v > 0]
    if values and max(values) / min(values) > 100:  # shifts often span decades across depth
        ax.set_yscale('log')
    ax.set_title(title or 'BatchNorm estimation shift vs depth')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def measure_config(cfg, checkpoint: Optional[str], num_batches: int = 50,
                   split: str = 'val', batch_size: Optional[int] = None,
                   device: str = 'cpu') -> List[ShiftRecord]:
    """Estimation shift of a detector built from an mmengine ``Config``.

    The model is built with ``mmdet.registry.MODELS`` (after ``register_all_modules``), its
    weights come from ``checkpoint`` (``mmengine.runner.load_checkpoint`` through the guarded
    scheme of :mod:`mmnorm_plugin.engine.guarded_loading`) or, when
    ``checkpoint`` is None, from the config's own ``init_cfg`` (e.g. a pretrained backbone),
    and the first ``num_batches`` batches of ``cfg.<split>_dataloader`` (built with
    ``Runner.build_dataloader``) go through ``model.test_step``.
    """
    import itertools

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner, load_checkpoint

    from ..engine.guarded_loading import guard_init_cfgs, guarded
    register_all_modules(init_default_scope=True)
    if num_batches < 1:
        raise ValueError(f'num_batches must be >= 1, got {num_batches}')
    model = MODELS.build(cfg.model)
    # every file loads as our tools load it: weights-only, CRCs and checksum verified
    if checkpoint is None:
        guard_init_cfgs(model)
        model.init_weights()
    else:
        load_checkpoint(model, guarded(checkpoint), map_location='cpu')
    model.to(device)
    loader_cfg = cfg.get(f'{split}_dataloader')
    if loader_cfg is None:
        raise KeyError(f'the config has no {split}_dataloader')
    loader_cfg = loader_cfg.copy()
    if batch_size is not None:
        loader_cfg['batch_size'] = batch_size
    loader = Runner.build_dataloader(loader_cfg)
    return estimation_shift(model, itertools.islice(loader, num_batches),
                            forward_fn=model.test_step)
