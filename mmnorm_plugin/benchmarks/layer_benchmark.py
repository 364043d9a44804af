"""Per-layer fwd+bwd time and memory of a norm, as ratios against a baseline in one run.

Cost targets (e.g. "<= 2x BN per layer") are checked by ``tools/benchmarks/*.py``, which are
thin CLIs over :func:`compare_norms`; nothing here is asserted in the test-suite, because CPU
timings on a shared 2-core machine are not reproducible enough to gate on.

What is measured, for each input shape and each candidate norm factory ``make(C)``:

* **time**: median wall time of the norm's forward and its backward down to its input, on the
  output of a ``Conv3x3`` (norms that look up their producing conv need it in the graph; the
  conv itself runs untimed and its backward is excluded with ``backward(inputs=...)``).
  Candidates and baseline run interleaved, so load on the machine hits them alike.
* **memory**: bytes the norm keeps alive for backward (tensors saved by autograd during its
  forward, deduplicated by storage, its input included, its parameters not) plus its
  persistent buffers (running statistics, history). On CPU there is no allocator
  peak counter, and these two are what grows with the method.

:func:`compare_compiled` times a small CNN's whole training step per norm, eager against
``torch.compile(fullgraph=True)`` (``tools/benchmarks/bench_compile.py``).
"""
import argparse
import copy
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..norms.iteration_clock import end_iteration

__all__ = ['NormFactory', 'DETECTION_SHAPES', 'parse_shape', 'compare_norms', 'format_rows',
           'buffer_bytes', 'collective_bytes', 'compare_compiled', 'format_compiled_rows']

NormFactory = Callable[[int], nn.Module]

#: Where a norm sits in an R50-FPN detector at 2 images of 800x1216 per GPU: FPN levels P2 and
#: P3 (N=2, C=256) and the 4conv1fc box head on 512 RoIs (N=512, C=256, 7x7).
DETECTION_SHAPES = ((2, 256, 200, 304), (2, 256, 100, 152), (512, 256, 7, 7))


def parse_shape(text: str) -> Tuple[int, int, int, int]:
    """``'N,C,H,W'`` -> tuple, for argparse ``type=``."""
    shape = tuple(int(v) for v in text.split(','))
    if len(shape) != 4:
        raise argparse.ArgumentTypeError(f'expected N,C,H,W, got {text!r}')
    return shape


def buffer_bytes(module: nn.Module) -> int:
    """Bytes of persistent state: every tensor of the state dict that is not a parameter
    (registered buffers, and state such as CBN's windows that is saved without being one)."""
    params = {id(p) for p in module.parameters()}
    state = module.state_dict(keep_vars=True)
    return sum(t.numel() * t.element_size() for t in state.values()
               if isinstance(t, torch.Tensor) and id(t) not in params)


def _saved_bytes(norm: nn.Module, x: torch.Tensor) -> int:
    exclude = {p.untyped_storage().data_ptr() for p in norm.parameters()}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in exclude:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        norm(x)
    return sum(seen.values())


def _timed_step(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> float:
    y = conv(x)
    inputs = [y, *(p for p in norm.parameters() if p.requires_grad)]
    _synchronize(x.device)
    t0 = time.perf_counter()
    out = norm(y)
    out.backward(torch.ones_like(out), inputs=inputs)
    _synchronize(x.device)  # CUDA kernels run asynchronously: time them, not their launch
    elapsed = time.perf_counter() - t0
    end_iteration()  # what an optimizer step signals (CBN: calls without one are call sites)
    return elapsed


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def compare_norms(candidates: Dict[str, NormFactory],
                  shapes: Sequence[Tuple[int, int, int, int]],
                  baseline: str = 'BN',
                  warmup: int = 3,
                  iters: int = 10,
                  seed: int = 0,
                  device: str = 'cpu') -> List[dict]:
    """Measure every candidate at every NCHW shape; ratios are against ``baseline``.

    ``warmup`` iterations also fill iteration-based state (history buffers, burn-in) before
    timing; pass a larger value for methods whose steady state starts later. Every process of
    a process group that measures synced norms must make the same call: candidates run in a
    fixed order, so their collectives pair up.
    """
    if baseline not in candidates:
        raise KeyError(f'baseline {baseline!r} is not among the candidates {list(candidates)}')
    if iters < 3:
        raise ValueError(f'iters={iters}: a median of fewer than 3 timings is noise')
    rows = []
    for shape in shapes:
        n, c, h, w = shape
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g).to(device)
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
        norms = {name: make(c).to(device).train() for name, make in candidates.items()}
        for norm in norms.values():
            for _ in range(warmup):
                _timed_step(conv, norm, x)
        times = {name: [] for name in norms}
        for _ in range(iters):
            for name, norm in norms.items():
                times[name].append(_timed_step(conv, norm, x))
        median = {k: statistics.median(v) for k, v in times.items()}
        y_from_conv = conv(x)
        for name in candidates:
            norm_time, base_time = median[name], median[baseline]
            # the producing conv must be in the graph for conv-aware norms
            saved = _saved_bytes(norms[name], y_from_conv)
            saved_base = _saved_bytes(norms[baseline], y_from_conv)
            state = buffer_bytes(norms[name])
            state_base = buffer_bytes(norms[baseline])
            rows.append(dict(
                shape=shape, name=name,
                ms=1e3 * norm_time, time_ratio=norm_time / base_time,
                saved_mb=saved / 2**20, state_mb=state / 2**20,
                mem_ratio=(saved + state) / max(saved_base + state_base, 1)))
    return rows


def format_rows(rows: List[dict]) -> str:
    header = (f'{"shape (N,C,H,W)":<22}{"norm":<22}{"ms/iter":>9}{"x time":>8}'
              f'{"saved MB":>10}{"state MB":>10}{"x mem":>8}')
    lines = [header, '-' * len(header)]
    for r in rows:
        lines.append(f'{str(r["shape"]):<22}{r["name"]:<22}{r["ms"]:>9.2f}{r["time_ratio"]:>8.2f}'
                     f'{r["saved_mb"]:>10.2f}{r["state_mb"]:>10.2f}{r["mem_ratio"]:>8.2f}')
    return '\n'.join(lines)


def collective_bytes(make: NormFactory, shape: Tuple[int, int, int, int], warmup: int = 5,
                     device: str = 'cpu') -> Tuple[int, int]:
    """Payload bytes of the collectives one training step of the norm issues: (forward,
    backward), after ``warmup`` steps (CBN's window full). Counted at ``torch.distributed``'s
    ``all_reduce``/``all_gather``/``all_gather_into_tensor`` (received bytes for a gather, the
    buffer for a reduce); every rank of the group must make the same call."""
    import torch.distributed as dist
    n, c, h, w = shape
    x = torch.randn(shape).to(device)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
    norm = make(c).to(device).train()
    for _ in range(warmup):
        _timed_step(conv, norm, x)
    counted = [0]

    def nbytes(t):
        return t.numel() * t.element_size()

    payloads = {'all_reduce': lambda t, *a, **k: nbytes(t),
                'all_gather': lambda outs, *a, **k: sum(nbytes(o) for o in outs),
                'all_gather_into_tensor': lambda out, *a, **k: nbytes(out)}
    originals = {name: getattr(dist, name) for name in payloads}

    def counting(name):
        def call(*args, **kwargs):
            counted[0] += payloads[name](*args, **kwargs)
            return originals[name](*args, **kwargs)
        return call

    try:
        for name in payloads:
            setattr(dist, name, counting(name))
        y = norm(conv(x))
        forward = counted[0]
        y.backward(torch.ones_like(y))
        backward = counted[0] - forward
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    return forward, backward


ConvFactory = Callable[..., nn.Module]


def _compile_net(norm: NormFactory, conv: ConvFactory, width: int) -> nn.Module:
    """Three conv-norm-ReLU stages and a linear head: a small CNN training step."""
    return nn.Sequential(
        conv(3, width, 3, padding=1, bias=False), norm(width), nn.ReLU(),
        conv(width, width, 3, padding=1, bias=False), norm(width), nn.ReLU(),
        conv(width, width, 3, stride=2, padding=1, bias=False), norm(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def _training_step(model: nn.Module, forward: Callable, optimizer, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    optimizer.zero_grad()
    forward(x).square().mean().backward()
    optimizer.step()
    _synchronize(x.device)
    return time.perf_counter() - t0


def compare_compiled(candidates: Dict[str, Tuple[NormFactory, ConvFactory]],
                     shape: Tuple[int, int, int, int] = (8, 3, 32, 32),
                     width: int = 32,
                     warmup: int = 3,
                     iters: int = 10,
                     backend: str = 'inductor',
                     seed: int = 0) -> List[dict]:
    """Training-step time of each norm's small CNN (:func:`_compile_net`), eager against
    ``torch.compile(fullgraph=True)``, measured in one run.

    Per candidate ``(norm factory, conv class)``: the convs are tapped
    (:func:`~mmnorm_plugin.norms.conv_origin.tap_convolutions`) and one eager step is taken
    (BKN records its layer chain); a copy is compiled, its first step timed separately (tracing
    and code generation, ``compile_s``), then both train ``warmup`` steps and ``iters``
    interleaved timed steps (forward, backward, SGD step). Rows: ``name``, ``eager_ms`` and
    ``compiled_ms`` (medians), ``speedup`` (eager / compiled), ``compile_s``.
    """
    from ..norms.conv_origin import tap_convolutions
    if iters < 3:
        raise ValueError(f'iters={iters}: a median of fewer than 3 timings is noise')
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    for name, (norm, conv) in candidates.items():
        torch.manual_seed(seed)
        eager = _compile_net(norm, conv, width).train()
        tap_convolutions(eager)
        eager_opt = torch.optim.SGD(eager.parameters(), lr=0.01, momentum=0.9)
        _training_step(eager, eager, eager_opt, x)
        model = copy.deepcopy(eager)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        compile_s = _training_step(model, compiled, opt, x)
        for _ in range(warmup):
            _training_step(eager, eager, eager_opt, x)
            _training_step(model, compiled, opt, x)
        times = {'eager': [], 'compiled': []}
        for _ in range(iters):
            times['eager'].append(_training_step(eager, eager, eager_opt, x))
            times['compiled'].append(_training_step(model, compiled, opt, x))
        eager_s, compiled_s = (statistics.median(times[k]) for k in ('eager', 'compiled'))
        rows.append(dict(name=name, eager_ms=1e3 * eager_s, compiled_ms=1e3 * compiled_s,
                         speedup=eager_s / compiled_s, compile_s=compile_s))
    torch._dynamo.reset()
    return rows


def format_compiled_rows(rows: List[dict]) -> str:
    header = (f'{"norm":<10}{"eager ms":>10}{"compiled ms":>13}{"eager/compiled":>16}'
              f'{"compile s":>11}')
    lines = [header, '-' * len(header)]
    for r in rows:
        lines.append(f'{r["name"]:<10}{r["eager_ms"]:>10.2f}{r["compiled_ms"]:>13.2f}'
                     f'{r["speedup"]:>16.2f}{r["compile_s"]:>11.1f}')
    return '\n'.join(lines)
