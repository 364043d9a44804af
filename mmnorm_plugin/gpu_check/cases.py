"""What the GPU check runs: the norms (as ``norm_cfg``), a small test network, training steps."""
import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ['NormCase', 'norm_cases', 'METHODS', 'SYNCED', 'REFERENCES', 'build_norm',
           'small_net', 'make_batches', 'train_steps', 'rel_err', 'compare_runs', 'autocast']

#: the plugin's methods, their synced variants and the reference norms, in report order
METHODS = ('CBN', 'MABN', 'BGN', 'BKN')
SYNCED = ('SyncCBN', 'SyncBGN', 'SyncBKN')
REFERENCES = ('BN', 'GN')


@dataclass(frozen=True)
class NormCase:
    """One norm as a config would name it: ``norm_cfg`` (built with mmcv's
    ``build_norm_layer``) and the ``conv_cfg`` of the convs in front of it (MABN is meant for
    weight-centralised convs). ``unsynced`` names the layer a synced variant equals at world
    size 1."""
    name: str
    norm_cfg: dict
    conv_cfg: Optional[dict] = None
    unsynced: Optional[str] = None
    notes: str = ''
    extra: dict = field(default_factory=dict)

    def conv(self, *args, **kwargs) -> nn.Module:
        if self.conv_cfg is None:
            return nn.Conv2d(*args, **kwargs)
        from mmcv.cnn import build_conv_layer
        return build_conv_layer(self.conv_cfg, *args, **kwargs)


def norm_cases(groups: int = 32) -> Dict[str, NormCase]:
    """Every norm in its steady state from the first iterations: CBN's window on (no burn-in),
    MABN's SMA and renormalization on (no warm-up or hold), BGN/GN with ``groups`` groups.
    Windows are short (CBN ``buffer_num=3``, MABN ``buffer_size=4``) so that a handful of
    steps fills them and wraps around."""
    cen = dict(type='CenConv2d')
    cbn = dict(buffer_num=3, burnin_iters=0)
    cases = [
        NormCase('BN', dict(type='BN')),
        NormCase('GN', dict(type='GN', num_groups=groups)),
        NormCase('CBN', dict(type='CBN', **cbn)),
        NormCase('MABN', dict(type='MABN', buffer_size=4, warmup_iters=0, renorm_hold_iters=0),
                 conv_cfg=cen, notes='after CenConv2d'),
        NormCase('BGN', dict(type='BGN', num_groups=groups)),
        NormCase('BKN', dict(type='BKN')),
        NormCase('SyncCBN', dict(type='SyncCBN', **cbn), unsynced='CBN'),
        NormCase('SyncBGN', dict(type='SyncBGN', num_groups=groups), unsynced='BGN'),
        NormCase('SyncBKN', dict(type='SyncBKN'), unsynced='BKN'),
    ]
    return {c.name: c for c in cases}


def build_norm(case: NormCase, channels: int) -> nn.Module:
    from mmcv.cnn import build_norm_layer
    return build_norm_layer(copy.deepcopy(case.norm_cfg), channels)[1]


def small_net(case: NormCase, channels: int) -> nn.Sequential:
    """conv-norm-ReLU three times (one strided), pooling and a linear classifier: every norm
    sits behind the conv that produced its input, and one layer's output feeds the next (BKN's
    prior is used)."""
    c = channels
    return nn.Sequential(
        case.conv(3, c, 3, padding=1, bias=False), build_norm(case, c), nn.ReLU(),
        case.conv(c, c, 3, stride=2, padding=1, bias=False), build_norm(case, c), nn.ReLU(),
        case.conv(c, c, 3, padding=1, bias=False), build_norm(case, c), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def make_batches(shape: Sequence[int], steps: int, seed: int) -> List[Tuple[Tensor, Tensor]]:
    """Fresh random inputs (not zeros, not ones) and labels for every step, on the CPU."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(tuple(shape), generator=g) * 1.5 + 0.3,
             torch.randint(0, 10, (shape[0], ), generator=g)) for _ in range(steps)]


class autocast:
    """``torch.autocast`` for ``dtype`` in (float16, bfloat16), a no-op for None."""

    def __init__(self, device: torch.device, dtype: Optional[torch.dtype]):
        self.ctx = (torch.autocast(device.type, dtype=dtype) if dtype is not None else None)

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)


def train_steps(model: nn.Module, batches, device: torch.device,
                dtype: torch.dtype = torch.float32, amp: Optional[torch.dtype] = None,
                lr: float = 0.05, capture: bool = True,
                step_fn: Optional[Callable] = None) -> dict:
    """SGD steps of ``model`` (moved to ``device``/``dtype``) on ``batches``.

    Returns the per-step losses, the parameter gradients and the first norm's output of the
    first step (all float64 on the CPU) and the state dict after the last step: what the
    correctness checks compare across devices, precisions and compilers."""
    model = model.to(device=device, dtype=dtype).train()
    forward = step_fn or model
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    first_norm = next(m for m in model.modules()
                      if not isinstance(m, (nn.Sequential, nn.Conv2d, nn.ReLU)))
    seen = []
    hook = first_norm.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    losses, grads = [], {}
    try:
        for i, (x, labels) in enumerate(batches):
            x, labels = x.to(device=device, dtype=dtype), labels.to(device)
            opt.zero_grad(set_to_none=True)
            with autocast(device, amp):
                loss = nn.functional.cross_entropy(forward(x).float(), labels)
            loss.backward()
            if capture and i == 0:
                grads = {n: p.grad.detach().double().cpu() for n, p in model.named_parameters()
                         if p.grad is not None}
            opt.step()
            losses.append(loss.detach())
    finally:
        hook.remove()
    out = dict(losses=torch.stack(losses).double().cpu(), grads=grads)
    if capture:
        out['first_output'] = seen[0].double().cpu() if seen else None
        out['state'] = {k: (v.detach().cpu() if isinstance(v, Tensor) else v)
                        for k, v in model.state_dict().items()}
        out['param_dtypes'] = sorted({str(t.dtype) for t in
                                      list(model.parameters()) + list(model.buffers())
                                      if t.is_floating_point()})
    return out


def rel_err(a: Tensor, b: Tensor, atol: float = 1e-6) -> float:
    """``‖a − b‖ / (‖b‖ + atol·√n)`` in float64 (b the reference); inf for a shape mismatch or
    a non-finite ``a``, so NaN never passes."""
    if a.shape != b.shape:
        return float('inf')
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float('inf')
    denom = b.norm().item() + atol * max(b.numel(), 1) ** 0.5
    return (a - b).norm().item() / denom


def compare_runs(run: dict, ref: dict) -> Dict[str, float]:
    """Relative errors of ``run`` against ``ref`` (both from :func:`train_steps`): losses,
    first output, first-step gradients (``grad``: all parameters as one vector; ``grad_max``:
    the worst parameter), final state (the worst tensor; integer state must be equal, inf
    otherwise)."""
    out = dict(loss=rel_err(run['losses'], ref['losses']))
    if ref.get('first_output') is not None:
        out['output'] = rel_err(run['first_output'], ref['first_output'])
    grads = [(run['grads'].get(k, torch.full_like(g, float('nan'))), g)
             for k, g in ref['grads'].items()]
    if grads:  # all parameters' gradients as one vector, and the worst single parameter
        out['grad'] = rel_err(torch.cat([a.flatten() for a, _ in grads]),
                              torch.cat([b.flatten() for _, b in grads]))
        out['grad_max'] = max(rel_err(a, b) for a, b in grads)
    worst_state, worst_key = 0.0, None
    for k, v in ref.get('state', {}).items():
        w = run['state'].get(k)
        if not isinstance(v, Tensor):
            continue
        if not isinstance(w, Tensor):
            e = float('inf')  # missing from the run's state
        elif v.is_floating_point():
            e = rel_err(w, v)
        else:
            e = 0.0 if torch.equal(w.cpu(), v.cpu()) else float('inf')
        if e > worst_state:
            worst_state, worst_key = e, k
    out['state'] = worst_state
    out['state_worst_key'] = worst_key
    return out
