"""Bit-level fingerprint of every norm's numerics: what a refactor must leave unchanged.

:func:`norm_fingerprint` trains small fixed models built around each layer of the package (every
norm and synced variant, the latter in one process, CenConv2d, XBNBlocks) through a fixed
sequence of steps on seeded inputs: forward, backward with a seeded upstream gradient, an SGD
step; eval-mode forwards in between; a non-finite batch and an empty one; and checkpoint loads
(its own state into a fresh layer, BN checkpoints, other window sizes, an older window layout).
After every step it records SHA-256 digests of the output, the input gradient, every
parameter gradient, every buffer and state-dict entry (CBN's window included) and the layers'
Python mirrors (CBN's iteration state). Two checkouts agree bit for bit when every digest does
(:func:`compare_fingerprints`); the digests depend on the torch build and the CPU, so compare
runs made on one machine with one torch.
"""
import contextlib
import hashlib
import json
import math
import warnings
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ['norm_fingerprint', 'compare_fingerprints', 'dump_fingerprint']

C = 8
#: hex characters kept of each SHA-256 (64 bits: ample to tell two runs apart, and the
#: recorded fingerprint stays small)
DIGEST_CHARS = 16


def _digest(value) -> str:
    h = hashlib.sha256()
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f'{t.dtype}{tuple(t.shape)}'.encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    else:
        h.update(json.dumps(value, sort_keys=True, default=repr).encode())
    return h.hexdigest()[:DIGEST_CHARS]


def _randn(shape, seed: int, dtype=torch.float32) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------ models
def _layer_classes():
    from ..models.backbones.xbn_resnet import XBNBasicBlock, XBNBottleneck
    from ..models.layers.cen_conv import CenConv2d
    from ..norms.bgn import BGN, SyncBGN
    from ..norms.bkn import BKN, SyncBKN
    from ..norms.cbn import CBN, SyncCBN
    from ..norms.mabn import MABN
    return dict(CBN=CBN, SyncCBN=SyncCBN, MABN=MABN, BGN=BGN, SyncBGN=SyncBGN, BKN=BKN,
                SyncBKN=SyncBKN, CenConv2d=CenConv2d, XBNBottleneck=XBNBottleneck,
                XBNBasicBlock=XBNBasicBlock)


def _chain(norm: Callable[[int], nn.Module], conv=nn.Conv2d) -> nn.Module:
    """conv -> norm -> ReLU -> conv -> norm: BKN chains its prior over the two norms."""
    return nn.Sequential(conv(3, C, 3, padding=1, bias=False), norm(C), nn.ReLU(),
                         conv(C, C, 3, padding=1, bias=False), norm(C))


class _SharedHead(nn.Module):
    """One conv + norm applied to two inputs per iteration (an FPN head: two call sites)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1, bias=False)
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        a = self.norm(self.conv(x))
        b = self.norm(self.conv(x[..., ::2, ::2]))
        return torch.cat((a.flatten(1), b.flatten(1)), 1)


class _Block(nn.Module):
    """A stem conv to the block's width, then the block."""

    def __init__(self, block: nn.Module, width: int, conv=nn.Conv2d):
        super().__init__()
        self.stem = conv(3, width, 3, padding=1, bias=False)
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.stem(x))


def _scenarios() -> Dict[str, Callable[[], nn.Module]]:
    k = _layer_classes()
    CBN, SyncCBN, MABN, BGN, SyncBGN, BKN, SyncBKN = (k[n] for n in (
        'CBN', 'SyncCBN', 'MABN', 'BGN', 'SyncBGN', 'BKN', 'SyncBKN'))
    Cen = k['CenConv2d']

    def mabn(**kw):
        return lambda c: MABN(c, buffer_size=3, warmup_iters=2, renorm_hold_iters=4, **kw)

    def xbn_bottleneck(**kw):
        return _Block(k['XBNBottleneck'](16, 4, **kw), 16, kw.get('conv_cfg') and Cen
                      or nn.Conv2d)

    return {
        'CBN': lambda: _chain(lambda c: CBN(c, buffer_num=3, burnin_iters=2)),
        'CBN-official': lambda: _chain(lambda c: CBN(
            c, buffer_num=2, burnin_iters=1, rho=0.5, eps_outside_sqrt=True,
            grad_through_compensation=False, running_stats='batch')),
        'CBN-cumulative': lambda: _chain(lambda c: CBN(c, buffer_num=3, momentum=None)),
        'CBN-no-running-stats': lambda: _chain(lambda c: CBN(
            c, buffer_num=2, affine=False, track_running_stats=False)),
        'CBN-shared-head': lambda: _SharedHead(CBN(C, buffer_num=2, burnin_iters=1)),
        'SyncCBN': lambda: _chain(lambda c: SyncCBN(c, buffer_num=3, burnin_iters=2)),
        'MABN': lambda: _chain(mabn(), Cen),
        'MABN-cumulative': lambda: _chain(mabn(momentum=None, affine=False), Cen),
        'BGN': lambda: _chain(lambda c: BGN(c, num_groups=2)),
        'BGN-G1-cumulative': lambda: _chain(lambda c: BGN(c, num_groups=1, momentum=None)),
        'BGN-no-running-stats': lambda: _chain(lambda c: BGN(c, num_groups=4,
                                                             track_running_stats=False)),
        'SyncBGN': lambda: _chain(lambda c: SyncBGN(c, num_groups=2)),
        'BKN': lambda: _chain(lambda c: BKN(c)),
        'BKN-estimated-ungated': lambda: _chain(lambda c: BKN(
            c, prior_input='estimated', gate_ratio=None, momentum=None)),
        'BKN-sample': lambda: _chain(lambda c: BKN(c, prior_mode='sample', prior_weight=0.5)),
        'BKN-no-running-stats': lambda: _chain(lambda c: BKN(c, affine=False,
                                                             track_running_stats=False)),
        'SyncBKN': lambda: _chain(lambda c: SyncBKN(c)),
        'CenConv2d': lambda: nn.Sequential(Cen(3, C, 3, padding=1), nn.ReLU(),
                                           Cen(C, C, 3, padding=1, groups=2)),
        'XBNBottleneck-BN': lambda: xbn_bottleneck(),
        'XBNBottleneck-CBN': lambda: xbn_bottleneck(norm_cfg=dict(type='CBN', buffer_num=2)),
        'XBNBottleneck-MABN': lambda: xbn_bottleneck(
            norm_cfg=dict(type='MABN', buffer_size=2, warmup_iters=1, renorm_hold_iters=2),
            conv_cfg=dict(type='CenConv2d')),
        'XBNBasicBlock-BKN-P3': lambda: _Block(k['XBNBasicBlock'](
            16, 16, norm_cfg=dict(type='BKN'), bfn_position='P3'), 16),
    }


#: name -> (dtype, autocast dtype or None): the models above in other precisions
_PRECISIONS = {
    'CBN-float64': ('CBN', torch.float64, None),
    'BKN-float64': ('BKN', torch.float64, None),
    'BGN-float64': ('BGN', torch.float64, None),
    'MABN-float64': ('MABN', torch.float64, None),
    'CBN-autocast-bf16': ('CBN', torch.float32, torch.bfloat16),
    'MABN-autocast-bf16': ('MABN', torch.float32, torch.bfloat16),
    'BGN-autocast-bf16': ('BGN', torch.float32, torch.bfloat16),
    'BKN-autocast-bf16': ('BKN', torch.float32, torch.bfloat16),
}

#: the step sequence: 'train' (forward, backward, SGD), 'eval' (an eval-mode forward),
#: 'nan' (a training forward with a non-finite pixel, then an optimizer step without
#: gradients: the iteration ends), 'empty' (a training step on a batch of 0 images)
_STEPS = ['train', 'train', 'eval', 'train', 'train', 'nan', 'train', 'empty', 'train',
          'train', 'eval', 'train', 'train', 'eval']

def _modules_of(model: nn.Module, kind: str) -> List[nn.Module]:
    return [m for m in model.modules() if type(m).__name__.endswith(kind)]


def _mirrors(model: nn.Module) -> Dict[str, object]:
    """The Python state next to the tensors (CBN's iteration clock, BKN's recorded chain)."""
    out = {}
    for name, m in model.named_modules():
        for attr in ('_iters', '_site', '_sites_known', '_window_on', '_burnin_iters',
                     '_chain_recorded', 'training'):
            if attr in vars(m):
                out[f'{name}.{attr}'] = vars(m)[attr]
        if '_producer' in vars(m):
            out[f'{name}._producer_set'] = vars(m)['_producer'] is not None
    return out


_WINDOW = ('hist_mean', 'hist_var', 'hist_mean_proj', 'hist_var_proj', 'hist_valid',
           'hist_count', 'hist_len', 'hist_ptr', 'hist_mean_grad', 'hist_var_grad')


def _state_digests(model: nn.Module) -> Dict[str, str]:
    """The state dict, the buffers it leaves out (non-persistent counters) and CBN's window
    before it is saved (it is saved once it exists)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        state = model.state_dict()
    out = {f'state.{key}': _digest(value) for key, value in state.items()}
    for key, value in model.named_buffers():
        if key not in state:
            out[f'buffer.{key}'] = _digest(value)
    for name, m in model.named_modules():
        for attr in _WINDOW:
            value = getattr(m, attr, None)
            key = f'{name}.{attr}' if name else attr
            if isinstance(value, Tensor) and key not in state:
                out[f'window.{key}'] = _digest(value)
    out['mirrors'] = _digest(_mirrors(model))
    return out


def _run_steps(model: nn.Module, seed: int, dtype: torch.dtype,
               autocast: Optional[torch.dtype], steps: List[str]) -> List[Dict[str, str]]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    records = []
    ctx = (torch.autocast('cpu', dtype=autocast) if autocast is not None
           else contextlib.nullcontext())
    for i, kind in enumerate(steps):
        s = seed * 1000 + i
        n = 0 if kind == 'empty' else 2
        x = (_randn((n, 3, 6, 6), s, dtype) * 2 + 1)
        if kind == 'nan':
            x[0, :, 2, 2] = math.nan
        x.requires_grad_(kind != 'eval')
        record = {'step': f'{i}:{kind}'}
        if kind == 'eval':
            model.eval()
            with torch.no_grad(), ctx:
                y = model(x)
            model.train()
            record['output'] = _digest(y)
        else:
            opt.zero_grad(set_to_none=True)
            with ctx:
                y = model(x)
            record['output'] = _digest(y)
            if kind != 'nan':
                y.backward(_randn(y.shape, s + 500, y.dtype))
                record['input_grad'] = _digest(x.grad)
                for name, p in model.named_parameters():
                    record[f'grad.{name}'] = _digest(p.grad)
            opt.step()  # after a 'nan' forward no parameter has a gradient: it only ends
            # the iteration (CBN)
        record.update(_state_digests(model))
        records.append(record)
    return records


def _trained_bn() -> nn.Module:
    torch.manual_seed(5)
    model = _chain(nn.BatchNorm2d)
    _run_steps(model, 77, torch.float32, None, ['train', 'train'])
    return model


def _load_scenarios(classes) -> Dict[str, Callable[[], Tuple[nn.Module, dict]]]:
    """name -> () -> (model, state): a state_dict loaded into a fresh model, then trained."""
    scenarios = _scenarios()
    CBN, MABN, BGN = classes['CBN'], classes['MABN'], classes['BGN']

    def trained(name, steps=('train', ) * 5):
        torch.manual_seed(11)
        model = scenarios[name]()
        _run_steps(model, 3, torch.float32, None, list(steps))
        return model

    def own(name):
        def make():
            src = trained(name)
            torch.manual_seed(12)
            return scenarios[name](), src.state_dict()
        return make

    def from_bn(make_norm, conv=nn.Conv2d):
        def make():
            state = _trained_bn().state_dict()
            torch.manual_seed(12)
            return _chain(make_norm, conv), state
        return make

    def cbn_other_window():
        src = trained('CBN')
        torch.manual_seed(12)
        return _chain(lambda c: CBN(c, buffer_num=2)), src.state_dict()

    def cbn_version4():
        src = trained('CBN')
        state = src.state_dict()
        state['1.hist_mean'][0, 0, 3] = math.nan
        state['1.hist_var'][0, 0, 3] = math.nan
        state = {k: v for k, v in state.items() if not k.endswith('hist_valid')}
        torch.manual_seed(12)
        return scenarios['CBN'](), state

    def mabn_other_window():
        src = trained('MABN')
        torch.manual_seed(12)
        return _chain(lambda c: MABN(c, buffer_size=5), classes['CenConv2d']), src.state_dict()

    def bgn_finer():
        torch.manual_seed(11)
        src = _chain(lambda c: BGN(c, num_groups=4))
        _run_steps(src, 3, torch.float32, None, ['train'] * 3)
        torch.manual_seed(12)
        return _chain(lambda c: BGN(c, num_groups=2)), src.state_dict()

    out = {f'load-own-{n}': own(n) for n in ('CBN', 'CBN-shared-head', 'SyncCBN', 'MABN',
                                             'BGN', 'BKN', 'SyncBKN', 'SyncBGN')}
    out.update({
        'load-bn-into-CBN': from_bn(lambda c: CBN(c, buffer_num=2)),
        'load-bn-into-MABN': from_bn(lambda c: MABN(c, buffer_size=2, warmup_iters=1,
                                                    renorm_hold_iters=2),
                                     classes['CenConv2d']),
        'load-bn-into-BGN': from_bn(lambda c: BGN(c, num_groups=4)),
        'load-bn-into-BKN': from_bn(lambda c: classes['BKN'](c)),
        'load-CBN-other-window': cbn_other_window,
        'load-CBN-version4-window': cbn_version4,
        'load-MABN-other-window': mabn_other_window,
        'load-BGN-finer-groups': bgn_finer,
    })
    return out


def norm_fingerprint(names: Optional[List[str]] = None) -> Dict[str, object]:
    """Run every scenario (or ``names``) and return ``{'meta': ..., 'scenarios': {name:
    [record per step]}}``, each record a dict of SHA-256 digests. Deterministic: one thread,
    seeded inputs, gradients and initialisations."""
    import mmnorm_plugin  # noqa: F401  (registers the layers for the XBN blocks' configs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        classes = _layer_classes()
        builders = {}
        for name, make in _scenarios().items():
            builders[name] = (make, torch.float32, None)
        for name, (base, dtype, autocast) in _PRECISIONS.items():
            builders[name] = (_scenarios()[base], dtype, autocast)
        loads = _load_scenarios(classes)
        wanted = list(builders) + list(loads) if names is None else names
        results = {}
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the layers' once-per-process notes
            for name in wanted:
                index = zlib.crc32(name.encode()) % 997  # a seed that depends on the name only
                if name in builders:
                    make, dtype, autocast = builders[name]
                    torch.manual_seed(index)
                    model = make().to(dtype)
                    results[name] = _run_steps(model, index, dtype, autocast, _STEPS)
                else:
                    model, state = loads[name]()
                    result = model.load_state_dict(state, strict=False)
                    first = {'step': 'load',
                             'missing': _digest(sorted(result.missing_keys)),
                             'unexpected': _digest(sorted(result.unexpected_keys))}
                    first.update(_state_digests(model))
                    results[name] = [first] + _run_steps(
                        model, index, torch.float32, None, ['train', 'train', 'eval'])
    finally:
        torch.set_num_threads(threads)
    return {'meta': {'torch': torch.__version__,
                     'digests': sum(len(r) - 1 for recs in results.values() for r in recs)},
            'scenarios': results}


def compare_fingerprints(before: Dict[str, object], after: Dict[str, object]) -> List[str]:
    """Every difference between two fingerprints, one line each (empty: bit-identical)."""
    problems = []
    a, b = before['scenarios'], after['scenarios']
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append(f'{name}: only in {"after" if name in b else "before"}')
            continue
        if len(a[name]) != len(b[name]):
            problems.append(f'{name}: {len(a[name])} steps before, {len(b[name])} after')
        for ra, rb in zip(a[name], b[name]):
            for key in sorted(set(ra) | set(rb)):
                if ra.get(key) != rb.get(key):
                    problems.append(f'{name} step {ra.get("step")}: {key} differs')
    return problems


def dump_fingerprint(fingerprint: Dict[str, object]) -> str:
    """JSON text with one line per step (diffable, compact)."""
    lines = ['{"meta": ' + json.dumps(fingerprint['meta'], sort_keys=True) + ',',
             ' "scenarios": {']
    names = sorted(fingerprint['scenarios'])
    for i, name in enumerate(names):
        records = fingerprint['scenarios'][name]
        lines.append(f'  {json.dumps(name)}: [')
        lines += ['   ' + json.dumps(r, sort_keys=True, separators=(',', ':'))
                  + (',' if j < len(records) - 1 else '') for j, r in enumerate(records)]
        lines.append('  ]' + (',' if i < len(names) - 1 else ''))
    lines.append(' }}')
    return '\n'.join(lines) + '\n'
