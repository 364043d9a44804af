"""Accuracy vs. batch size of normalization layers: the papers' small-batch figure, on CPU.

Every method paper in this plugin shows one figure first: accuracy of the same network
trained at decreasing batch sizes, where BN collapses and the proposed norm does not. This
module reproduces that experiment at a scale a CPU does in minutes, on a real image dataset
shipped inside a Python package (scikit-learn's ``load_digits``: 1,797 handwritten digits,
8 × 8 grey levels, 10 classes; no download):

* the network is a small all-convolutional classifier built from mmcv bricks
  (``build_conv_layer`` + ``build_norm_layer``, exactly what mmdet does with a ``norm_cfg``):
  five ``conv3×3 → norm → ReLU`` layers (widths 32, 32, 64 stride 2, 64, 64), global average
  pooling and a linear classifier. At batch 1 a norm after the stride-2 conv sees 16 values
  per channel, which starves BN the way a detector's 1-image batches do;
* every arm trains for the same number of epochs with SGD (momentum 0.9, weight decay 5e-4)
  and a one-cycle schedule whose peak learning rate follows the linear scaling rule
  ``lr = base_lr × batch / 32`` (the rule the detection configs use);
* evaluation is in eval mode, i.e. with each layer's running (population) statistics, as a
  trained detector is evaluated.

:func:`run_study` returns one record per (method, batch size, seed), with the commit and the
command it comes from (:mod:`~mmnorm_plugin.analysis.provenance`), :func:`summarize` the
mean ± std over seeds, :func:`format_table` a text table, :func:`plot_study` the PNG (accuracy
vs. batch size, log-x, one line per method). ``tools/analysis/small_batch_study.py`` is the CLI.
"""
import copy
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer, build_norm_layer
from torch import Tensor, nn

from .provenance import PROVENANCE_KEYS, provenance

__all__ = [
    'METHODS', 'StudyRecord', 'SmallConvNet', 'load_digits_split', 'train_and_evaluate',
    'run_study', 'summarize', 'format_cell', 'format_table', 'format_paired_table', 'plot_study'
]

# The arms users compare. Each is the norm_cfg (+ conv_cfg) a config would carry; 'XBN' puts
# the batch-free norm (GN) where XBNBlock does in a block: after every other conv.
METHODS: Dict[str, Dict] = {
    'BN': dict(norm_cfg=dict(type='BN')),
    'GN': dict(norm_cfg=dict(type='GN', num_groups=8)),
    'CBN': dict(norm_cfg=dict(type='CBN', buffer_num=3)),
    'MABN': dict(norm_cfg=dict(type='MABN'), conv_cfg=dict(type='CenConv2d')),
    'BGN': dict(norm_cfg=dict(type='BGN', num_groups=8)),
    'BKN': dict(norm_cfg=dict(type='BKN')),
    'XBN': dict(norm_cfg=dict(type='BN'), bfn_cfg=dict(type='GN', num_groups=8)),
}

WIDTHS = (32, 32, 64, 64, 64)
STRIDES = (1, 1, 2, 1, 1)


class SmallConvNet(nn.Module):
    """Five ``conv3×3 → norm → ReLU`` layers, global average pooling, linear classifier.

    Args:
        norm_cfg (dict): the norm under study, as in an mmdet config.
        conv_cfg (dict, optional): conv layer config (``CenConv2d`` for MABN).
        bfn_cfg (dict, optional): a batch-free norm used instead of ``norm_cfg`` in layers
            2 and 4 (XBNBlock's placement: one BFN per pair of convs).
        in_channels, num_classes: data geometry.
    """

    def __init__(self, norm_cfg: Dict, conv_cfg: Optional[Dict] = None,
                 bfn_cfg: Optional[Dict] = None, in_channels: int = 1,
                 num_classes: int = 10) -> None:
        super().__init__()
        layers = []
        for i, (width, stride) in enumerate(zip(WIDTHS, STRIDES)):
            cfg = bfn_cfg if bfn_cfg is not None and i in (1, 3) else norm_cfg
            layers += [
                build_conv_layer(conv_cfg, in_channels, width, 3, stride=stride, padding=1,
                                 bias=False),
                build_norm_layer(cfg, width)[1],
                nn.ReLU(inplace=True)
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def load_digits_split(test_fraction: float = 0.2,
                      seed: int = 0) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits as NCHW float tensors, a stratified split fixed by ``seed``.

    Pixels are standardized with the training set's mean and std (one scalar each).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('the small-batch study needs scikit-learn (its digits dataset ships '
                          "with the package): pip install -e '.[analysis]'") from e
    digits = load_digits()
    images = digits.images.astype(np.float32)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        test_idx.extend(rng.permutation(idx)[:int(round(len(idx) * test_fraction))])
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_idx] = True
    train_x, test_x = images[~test_mask], images[test_mask]
    mean, std = train_x.mean(), train_x.std()
    to_tensor = lambda a: torch.from_numpy((a - mean) / std).unsqueeze(1)  # noqa: E731
    return (to_tensor(train_x), torch.from_numpy(labels[~test_mask]), to_tensor(test_x),
            torch.from_numpy(labels[test_mask]))


@dataclass
class StudyRecord:
    """One training run: the arm, its hyperparameters and its eval-mode test accuracy, and
    where it comes from (:func:`~mmnorm_plugin.analysis.provenance.provenance`: commit, dirty
    flag, versions, command; empty for records written before records carried it)."""
    method: str
    batch_size: int
    seed: int
    accuracy: float
    epochs: float
    peak_lr: float
    seconds: float
    final_loss: float
    extra: Dict = field(default_factory=dict)
    provenance: Dict = field(default_factory=dict)

    def as_dict(self) -> Dict:
        """A row of ``study.json``: the provenance keys sit beside the others, as in every
        project record (norm_sweep's), so a reader finds ``commit`` in the same place; a
        record without provenance is written exactly as before."""
        row = asdict(self)
        row.update(row.pop('provenance'))
        return row

    @classmethod
    def from_dict(cls, row: Dict) -> 'StudyRecord':
        """The inverse of :meth:`as_dict`, also for rows without the provenance keys."""
        own = {k: v for k, v in row.items() if k not in PROVENANCE_KEYS}
        return cls(**own, provenance={k: row[k] for k in PROVENANCE_KEYS if k in row})


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)


@torch.no_grad()
def _remove_radial_component(weights: Sequence[Tensor]) -> None:
    """Project each conv filter's gradient onto the tangent space of its weight:
    ``g_c <- g_c - <g_c, w_c> / |w_c|^2 * w_c`` per output channel ``c``.

    A norm that is invariant to the scale of each filter has no gradient along ``w_c``; the
    study's causal control for CBN's official gradient (which has one) removes it and checks
    whether that alone restores the accuracy.
    """
    for w in weights:
        if w.grad is None:
            continue
        # views (not copies) of the filters, so that sub_ edits the gradient itself
        flat, grad = w.view(w.shape[0], -1), w.grad.view(w.shape[0], -1)
        coef = (grad * flat).sum(1, keepdim=True) / flat.square().sum(1, keepdim=True).clamp_min(
            1e-12)
        grad.sub_(coef * flat)


def train_and_evaluate(method: Dict, batch_size: int, seed: int, data: Sequence[Tensor],
                       epochs: float = 4, base_lr: float = 0.1, weight_decay: float = 5e-4,
                       name: str = '', progress: Optional[Callable[[], None]] = None
                       ) -> StudyRecord:
    """Train :class:`SmallConvNet` with ``method`` (its kwargs) at ``batch_size``, evaluate.

    ``method`` holds :class:`SmallConvNet`'s kwargs and, optionally, training options of the
    arm: ``epochs`` (overrides the argument) and ``radial_free_grad`` (remove each conv
    filter's gradient component along its weight before every step; the causal control for
    CBN's official gradient). ``epochs`` may be fractional (tests use a tiny budget). The peak
    learning rate is
    ``base_lr × batch_size / 32``; the last, incomplete batch of an epoch is dropped so every
    training batch has exactly ``batch_size`` images.
    """
    train_x, train_y, test_x, test_y = data
    method = copy.deepcopy(method)
    epochs = method.pop('epochs', epochs)
    radial_free = method.pop('radial_free_grad', False)
    torch.manual_seed(seed)
    model = SmallConvNet(in_channels=train_x.shape[1], **method)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    peak_lr = base_lr * batch_size / 32
    steps_per_epoch = len(train_x) // batch_size
    total_steps = max(1, int(round(epochs * steps_per_epoch)))
    optimizer = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9,
                                weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak_lr,
                                                    total_steps=total_steps)
    generator = torch.Generator().manual_seed(seed)
    start, step, loss = time.perf_counter(), 0, torch.zeros(())
    model.train()
    while step < total_steps:
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(steps_per_epoch):
            if step == total_steps:
                break
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if radial_free:
                _remove_radial_component(convs)
            optimizer.step()
            scheduler.step()
            step += 1
            if progress is not None:
                progress()
    seconds = time.perf_counter() - start
    return StudyRecord(method=name, batch_size=batch_size, seed=seed,
                       accuracy=_accuracy(model, test_x, test_y), epochs=epochs,
                       peak_lr=peak_lr, seconds=seconds, final_loss=float(loss.detach()),
                       extra=dict(radial_free_grad=True) if radial_free else {})


def run_study(methods: Dict[str, Dict], batch_sizes: Iterable[int] = (1, 2, 4, 32),
              seeds: Iterable[int] = (0, 1, 2), epochs: float = 4, base_lr: float = 0.1,
              data: Optional[Sequence[Tensor]] = None, progress: bool = True,
              stream: Optional[TextIO] = None, command: Optional[str] = None
              ) -> List[StudyRecord]:
    """Train every (method, batch size, seed) arm; return the records in that order.

    Args:
        methods: name → ``SmallConvNet`` kwargs (``norm_cfg``, optional ``conv_cfg``,
            ``bfn_cfg``), e.g. a subset of :data:`METHODS` or your own norm configs.
        command: the command line that reruns the study (the CLI passes its own), recorded
            with the commit in every record's ``provenance``. Both are taken once, before
            training: the code that trains is the code imported then, even if the checkout
            moves during a long study.
        progress: report progress on ``stream`` (default ``sys.stdout``): on a terminal an
            mmengine progress bar over all training steps; otherwise (a log file, CI) one
            line per finished arm, since a redrawn bar is thousands of lines of ``\r`` there.
    """
    stream = sys.stdout if stream is None else stream
    data = load_digits_split() if data is None else data
    batch_sizes, seeds = list(batch_sizes), list(seeds)
    arms = [(name, b, s) for name in methods for b in batch_sizes for s in seeds]
    tick = None
    bar = progress and stream.isatty()
    if bar:
        from mmengine.utils import ProgressBar
        n = len(data[0])
        tick = ProgressBar(sum(max(1, int(round(methods[m].get('epochs', epochs) * (n // b))))
                               for m, b, _ in arms),
                           file=stream).update
    records, origin = [], provenance(command)
    for i, (name, batch_size, seed) in enumerate(arms, 1):
        record = train_and_evaluate(methods[name], batch_size, seed, data, epochs=epochs,
                                    base_lr=base_lr, name=name, progress=tick)
        record.provenance = copy.deepcopy(origin)
        records.append(record)
        if progress and not bar:
            print(f'[{i}/{len(arms)}] {name}, batch {batch_size}, seed {seed}: accuracy '
                  f'{100 * record.accuracy:.1f} % ({record.seconds:.0f} s)', file=stream,
                  flush=True)
    if bar:
        print(file=stream)
    return records


def summarize(records: Sequence[StudyRecord]) -> Dict[str, Dict[int, Tuple[float, float, int]]]:
    """method → batch size → (mean accuracy, sample std over seeds (n − 1; 0 for one seed),
    number of seeds)."""
    groups: Dict[str, Dict[int, List[float]]] = {}
    for r in records:
        groups.setdefault(r.method, {}).setdefault(r.batch_size, []).append(r.accuracy)
    return {
        method: {b: (float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0,
                     len(a))
                 for b, a in sorted(by_batch.items())}
        for method, by_batch in groups.items()
    }


def format_cell(mean: float, std: float, n: int) -> str:
    """``'97.9 ± 0.3'`` (%) over ``n`` seeds; ``'97.9 (n=1)'`` for one seed, which has no
    spread to report (``± 0.0`` would claim a measured one)."""
    return f'{100 * mean:.1f} ± {100 * std:.1f}' if n > 1 else f'{100 * mean:.1f} (n={n})'


def format_table(records: Sequence[StudyRecord]) -> str:
    """Markdown table: one row per method, one column per batch size, mean ± std (%) over
    seeds, or the single value with ``(n=1)``."""
    summary = summarize(records)
    batch_sizes = sorted({b for by_batch in summary.values() for b in by_batch})
    lines = ['| method | ' + ' | '.join(f'batch {b}' for b in batch_sizes) + ' |',
             '|---|' + '---|' * len(batch_sizes)]
    for method, by_batch in summary.items():
        cells = []
        for b in batch_sizes:
            if b in by_batch:
                cells.append(format_cell(*by_batch[b]))
            else:
                cells.append('–')
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def format_paired_table(records: Sequence[StudyRecord], baseline: str) -> str:
    """Markdown table of each method's paired difference against ``baseline`` at the same
    batch size (same seed = same initialization and data order): mean and 95 % t interval in
    accuracy points, ``*`` where the difference survives Holm–Bonferroni over the column's
    rows and rests on at least 5 seeds (:func:`.paired_stats.claim_mark`: fewer is a pilot)."""
    from .paired_stats import claim_mark, format_interval, holm, paired_difference
    acc = {}
    for r in records:
        acc.setdefault(r.method, {}).setdefault(r.batch_size, {})[r.seed] = r.accuracy
    if baseline not in acc:
        raise ValueError(f'baseline {baseline!r} is not among the methods {sorted(acc)}')
    batches = sorted({r.batch_size for r in records})
    lines = [f'| paired Δ vs {baseline} [95 % CI] | ' + ' | '.join(f'batch {b}' for b in batches)
             + ' |', '|---|' + '---|' * len(batches)]
    methods = [m for m in dict.fromkeys(r.method for r in records) if m != baseline]
    diffs = {(m, b): paired_difference(acc[m].get(b, {}), acc[baseline].get(b, {}))
             for m in methods for b in batches}
    adjusted = {}
    for b in batches:  # a column is one family: its rows against one baseline
        for m, v in holm({m: diffs[m, b]['p'] for m in methods}).items():
            adjusted[m, b] = v['p_adj']
    for method in methods:
        cells = [format_interval(diffs[method, b],
                                 mark=claim_mark(diffs[method, b], adjusted.get((method, b))))
                 for b in batches]
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_study(records: Sequence[StudyRecord], path: str, title: str = '') -> str:
    """Accuracy vs. batch size (log-x), mean ± std over seeds (no bar for one seed), one line
    per method. Styles: :mod:`~mmnorm_plugin.analysis.plot_style` (a method and its variants
    share a colour and marker; defaults solid and on top, variants dashed and hollow); the
    lines are spread slightly along x so that equal accuracies do not hide each other."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from .plot_style import arm_styles
    summary = summarize(records)
    styles = arm_styles(list(summary))
    fig, ax = plt.subplots(figsize=(8.0, 5.4))
    batch_sizes = sorted({b for by_batch in summary.values() for b in by_batch})
    # spread of the lines around each batch size, in log2 units (0.25 = 19 % apart at most)
    offsets = np.linspace(-0.125, 0.125, len(summary)) if len(summary) > 1 else [0.0]
    for offset, (method, by_batch) in zip(offsets, summary.items()):
        style = styles[method]
        b = np.array(list(by_batch), dtype=float) * 2.0 ** offset
        mean = np.array([v[0] for v in by_batch.values()]) * 100
        std = np.array([v[1] if v[2] > 1 else 0.0 for v in by_batch.values()]) * 100
        ax.errorbar(b, mean, yerr=std, capsize=2.5, label=method, color=style['color'],
                    marker=style['marker'], linestyle=style['linestyle'],
                    markerfacecolor=style['color'] if style['filled'] else 'white',
                    markersize=7 if style["default"] else 5.5,
                    linewidth=1.8 if style['default'] else 1.2, zorder=style['zorder'])
    ax.set_xscale('log', base=2)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.minorticks_off()
    ax.set_xlabel('images per batch (log scale)')
    ax.set_ylabel('test accuracy (%), eval mode')
    ax.set_title(title or 'Accuracy vs. batch size')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small', loc='center left', bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
