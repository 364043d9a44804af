"""``layer_bench``: every norm's layer timed against BN and GN at detection shapes."""
import copy
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..cases import autocast, build_norm, norm_cases
from ..measure import Job, OpCounter, count_device_launches, error_text, synchronize, time_jobs
from .base import AMP_DTYPES, Context, Part, cell, problem, run_items

__all__ = ['PART', 'BENCH_NORMS']

BENCH_NORMS = ('BN', 'GN', 'CBN', 'MABN', 'BGN', 'BKN')


def run(ctx: Context) -> dict:
    """Blocks of rows, one block per shape of ``cfg.bench_shapes`` and dtype of
    ``cfg.bench_dtypes`` (:func:`bench_block`); measured, not judged."""
    cfg = ctx.cfg
    blocks = [(label, tuple(shape), dt) for label, shape in cfg.bench_shapes.items()
              for dt in cfg.bench_dtypes]

    def measure(block: Tuple[str, tuple, str], item: dict) -> List[dict]:
        label, shape, dt = block
        rows = bench_block(ctx, shape, AMP_DTYPES.get(dt))
        for r in rows:
            r['block'] = label
        return rows

    items = run_items(ctx, 'layer_bench', blocks, measure, essential=False,
                      label=lambda block: f'{block[0]} {block[2]}')
    timer = 'CUDA events' if ctx.cuda else 'perf_counter'
    return dict(items=items,
                notes=f'median of {cfg.bench_iters} after {cfg.bench_warmup} warm-up, {timer}; '
                      'norm_ms: norm fwd+bwd (conv untimed), layer_ms: conv3x3+norm fwd+bwd; '
                      'floor: conv3x3+BN+one weight-gradient conv; launches: device activities '
                      'of one norm fwd+bwd (torch.profiler); bf16 = autocast')


class _Block:
    """The modules and jobs (:data:`~mmnorm_plugin.gpu_check.measure.Job`) of one shape and
    dtype: for every norm of :data:`BENCH_NORMS` its producing conv3x3 and the norm, all
    convs with the same weights, and CBN's floor (conv3x3 + BN)."""

    def __init__(self, ctx: Context, shape, amp: Optional[torch.dtype]):
        self.dev, self.amp = ctx.device, amp
        cases = norm_cases(32)
        c = shape[1]
        self.x = torch.randn(shape, generator=torch.Generator().manual_seed(ctx.cfg.seed)).to(
            self.dev)
        base = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.convs: Dict[str, nn.Module] = {}
        self.norms: Dict[str, nn.Module] = {}
        for name in BENCH_NORMS:
            conv = cases[name].conv(c, c, 3, padding=1, bias=False)
            conv.load_state_dict(base.state_dict())
            self.convs[name] = conv.to(self.dev).train()
            self.norms[name] = build_norm(cases[name], c).to(self.dev).train()
        self.floor = (copy.deepcopy(base).to(self.dev), nn.BatchNorm2d(c).to(self.dev))
        self._grads = {}

    def grad_like(self, out: torch.Tensor) -> torch.Tensor:
        """A fixed random output gradient per dtype and shape."""
        key = (out.dtype, tuple(out.shape))
        if key not in self._grads:
            self._grads[key] = torch.randn(
                out.shape, generator=torch.Generator().manual_seed(1)).to(device=self.dev,
                                                                          dtype=out.dtype)
        return self._grads[key]

    @staticmethod
    def new_iteration(*modules: nn.Module):
        """``post`` of a job: gradients dropped and a new weight version, as an optimizer
        step makes (CBN's window takes a step per weight version)."""
        def post():
            with torch.no_grad():
                for m in modules:
                    for p in m.parameters():
                        p.grad = None
                        p.add_(0.0)
        return post

    def norm_job(self, name: str) -> Job:
        """The norm's forward and backward down to its input; its conv runs untimed (as in
        :func:`mmnorm_plugin.benchmarks.layer_benchmark.compare_norms`)."""
        conv, norm = self.convs[name], self.norms[name]
        params = [p for p in norm.parameters() if p.requires_grad]

        def prep():
            with autocast(self.dev, self.amp):
                return conv(self.x)

        def body(y):
            with autocast(self.dev, self.amp):
                out = norm(y)
            out.backward(self.grad_like(out), inputs=[y] + params)
        return prep, body, self.new_iteration(conv, norm)

    def layer_job(self, conv: nn.Module, norm: nn.Module, extra_wgrad: bool = False) -> Job:
        """The whole conv3x3 + norm layer forward and backward; ``extra_wgrad``: one more
        weight-gradient convolution (what CBN's exact ∂σ²/∂W needs: its floor)."""
        from torch.nn.grad import conv2d_weight

        def body(_):
            with autocast(self.dev, self.amp):
                y = conv(self.x)
                out = norm(y)
            out.backward(self.grad_like(out))
            if extra_wgrad:
                conv2d_weight(self.x.to(y.dtype), conv.weight.shape, y.detach(), 1, 1)
        return None, body, self.new_iteration(conv, norm)


def bench_block(ctx: Context, shape, amp: Optional[torch.dtype]) -> List[dict]:
    """Every norm of :data:`BENCH_NORMS` at one NCHW shape: the norm's forward and backward
    (its conv untimed), the whole conv3x3 + norm layer, and for CBN its floor, all timed
    interleaved; then per norm its ATen ops, device launches and (CUDA) peak memory."""
    cfg = ctx.cfg
    block = _Block(ctx, shape, amp)
    norm_ms = time_jobs({k: block.norm_job(k) for k in BENCH_NORMS}, ctx.device,
                        cfg.bench_warmup, cfg.bench_iters, deadline=ctx.budget.end())
    layer_jobs = {k: block.layer_job(block.convs[k], block.norms[k]) for k in BENCH_NORMS}
    layer_jobs['floor'] = block.layer_job(*block.floor, extra_wgrad=True)
    layer_ms = time_jobs(layer_jobs, ctx.device, cfg.bench_warmup, cfg.bench_iters,
                         deadline=ctx.budget.end())
    rows = []
    for name in BENCH_NORMS:
        row = _timing_row(name, shape, amp, norm_ms, layer_ms, block.norms[name])
        row.update(_counts(ctx, block.norm_job(name)))
        rows.append(row)
    return rows


def _timing_row(name: str, shape, amp, norm_ms: Dict[str, float], layer_ms: Dict[str, float],
                norm: nn.Module) -> dict:
    from mmnorm_plugin.benchmarks.layer_benchmark import buffer_bytes
    row = dict(name=name, shape=list(shape), dtype='bf16' if amp else 'fp32',
               status='passed', norm_ms=round(norm_ms[name], 4),
               x_BN=round(norm_ms[name] / norm_ms['BN'], 3),
               x_GN=round(norm_ms[name] / norm_ms['GN'], 3),
               layer_ms=round(layer_ms[name], 4),
               layer_x_BN=round(layer_ms[name] / layer_ms['BN'], 3),
               state_mb=round(buffer_bytes(norm) / 2**20, 4))
    if name == 'CBN':
        row['floor_ms'] = round(layer_ms['floor'], 4)
        row['layer_x_floor'] = round(layer_ms[name] / layer_ms['floor'], 3)
    return row


def _counts(ctx: Context, job: Job) -> dict:
    """One more untimed run of the norm job for each count: ATen ops (any device), device
    launches (``torch.profiler``, CUDA) and the peak memory it allocates (CUDA)."""
    prep, body, post = job
    dev, out = ctx.device, {}
    y = prep()
    counter = OpCounter()
    with counter:
        body(y)
    post()
    out['aten_ops'] = counter.total
    try:
        y = prep()
        out['launches'] = count_device_launches(lambda: body(y), dev)
        post()
    except Exception as exc:  # noqa: BLE001  (the profiler is optional)
        out['launches'] = None
        out['launches_error'] = error_text(exc)['error']
    if out['launches'] is None and not ctx.cuda:
        out['launches'] = 'skipped: no CUDA'
    if ctx.cuda:
        y = prep()
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        body(y)
        synchronize(dev)
        out['peak_mb'] = round((torch.cuda.max_memory_allocated(dev) - before) / 2**20, 2)
        post()
    return out


def rows(part: dict) -> List[str]:
    lines = ['layer benchmark (ms: norm fwd+bwd; x BN/GN; conv3x3+norm layer; launches)',
             f'{"shape":<22}{"dt":<5}{"norm":<6}{"ms":>9}{"x BN":>7}{"x GN":>7}'
             f'{"layer ms":>10}{"x BN":>7}{"x floor":>8}{"launch":>7}{"ops":>5}']
    for it in part.get('items', []):
        if 'norm_ms' not in it:  # a block that errored or was skipped
            lines.append(f'{it["name"]:<33}{it["status"]} {problem(it)[:60]}')
            continue
        launches = it.get('launches')
        launches = launches if isinstance(launches, int) else '-'
        lines.append(f'{str(tuple(it["shape"])):<22}{it["dtype"]:<5}{it["name"]:<6}'
                     f'{it["norm_ms"]:>9.3f}{it["x_BN"]:>7.2f}{it["x_GN"]:>7.2f}'
                     f'{it["layer_ms"]:>10.3f}{it["layer_x_BN"]:>7.2f}'
                     f'{cell(it.get("layer_x_floor"), "{:.2f}"):>8}{launches:>7}'
                     f'{it.get("aten_ops", "-"):>5}')
    return lines


PART = Part('layer_bench', share=0.17, run=run, rows=rows)
