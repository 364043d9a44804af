"""The parts of the GPU check. Each takes a :class:`Context` and returns a dict with ``items``
(one per norm, shape or mode, each with a ``status``: passed / failed / error / skipped) and
optional ``notes``; an exception inside an item is recorded on that item and the part goes
on with the next one."""
import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from ..norms.conv_origin import tap_convolutions
from .cases import (METHODS, REFERENCES, SYNCED, autocast, build_norm, compare_runs,
                    make_batches, norm_cases, small_net, train_steps)
from .measure import (Budget, OpCounter, count_device_launches, error_text, exact_fp32,
                      synchronize, time_jobs)

__all__ = ['Context', 'PART_FUNCTIONS', 'TOLERANCES']

#: relative errors (‖a − b‖ / ‖b‖) allowed. fp32: the first step's output and gradients (all
#: parameters as one vector, and the worst one), the per-step losses and the state after all
#: steps, against the CPU in float64 and in float32 (float32 arithmetic lands far under 1e-4
#: on these sizes; TF32 is off). bf16/fp16: an autocast run against the float32 run on the
#: same device (its state after several steps is not compared: the trajectories part);
#: measured on the CPU for BN at bf16 (output, grad) ≈ (3e-3, 6e-2), at fp16 (4e-4, 9e-3).
TOLERANCES = {
    'fp32': dict(output=1e-4, grad=1e-4, grad_max=1e-3, loss=1e-4, state=1e-3),
    'bf16': dict(output=3e-2, grad=1.5e-1, loss=2e-2),
    'fp16': dict(output=5e-3, grad=5e-2, loss=5e-3),
    'compile': dict(output=1e-4, grad=1e-4, grad_max=1e-3, loss=1e-4, state=1e-3),
}
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass
class Context:
    cfg: object
    device: torch.device
    budget: Budget
    log: Callable[[str], None] = print
    cache: dict = field(default_factory=dict)
    #: called with the items done so far after each one (the runner writes the JSON then, so
    #: a run stopped from outside keeps them)
    save: Callable[[list], None] = lambda items: None

    @property
    def cuda(self) -> bool:
        return self.device.type == 'cuda'


def _skip_rest(names, reason='budget') -> List[dict]:
    return [dict(name=n, status='skipped', reason=reason) for n in names]


def _within(errors: Dict[str, float], tol: Dict[str, float]) -> bool:
    return all(errors.get(k, 0.0) <= v for k, v in tol.items())


def _fmt_errs(errors: Dict[str, float]) -> Dict[str, float]:
    return {k: (float(f'{v:.3g}') if isinstance(v, float) else v) for k, v in errors.items()}


# --------------------------------------------------------------------------- correctness
def part_correctness(ctx: Context) -> dict:
    """Every norm and synced variant (world size 1, no process group): a few SGD steps of the
    small network in float32 on the device against the same steps on the CPU in float64 and
    in float32; synced variants also against their unsynced layer on the device."""
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(cfg.small_groups)
    batches = make_batches(cfg.net_input, cfg.steps, cfg.seed)
    cpu = torch.device('cpu')
    tol = TOLERANCES['fp32']
    names = list(METHODS + SYNCED + REFERENCES)
    items, runs = [], ctx.cache.setdefault('fp32_runs', {})
    for i, name in enumerate(names):
        if ctx.budget.exhausted(essential=True):
            items += _skip_rest(names[i:])
            break
        case = cases[name]
        item = dict(name=name, status='passed')
        try:
            with exact_fp32():
                torch.manual_seed(cfg.seed)
                net = small_net(case, cfg.net_channels)
                ref64 = train_steps(copy.deepcopy(net), batches, cpu, torch.float64)
                ref32 = train_steps(copy.deepcopy(net), batches, cpu, torch.float32)
                run = (train_steps(copy.deepcopy(net), batches, dev, torch.float32)
                       if ctx.cuda else ref32)
            runs[name] = run
            item['vs_cpu_fp64'] = _fmt_errs(compare_runs(run, ref64))
            if ctx.cuda:
                item['vs_cpu_fp32'] = _fmt_errs(compare_runs(run, ref32))
            else:
                item['vs_cpu_fp32'] = 'the device is the CPU'
            checks = [item['vs_cpu_fp64']] + ([item['vs_cpu_fp32']] if ctx.cuda else [])
            if case.unsynced and case.unsynced in runs:
                item['vs_unsynced'] = _fmt_errs(compare_runs(run, runs[case.unsynced]))
                checks.append(item['vs_unsynced'])
            item['losses'] = [round(v, 6) for v in run['losses'].tolist()]
            if not all(_within(c, tol) for c in checks):
                item['status'] = 'failed'
        except Exception as exc:  # noqa: BLE001  (recorded, the part goes on)
            item.update(status='error', **error_text(exc))
        items.append(item)
        ctx.save(items)
        ctx.log(f'  correctness {name}: {item["status"]}')
    return dict(items=items, tolerance=tol,
                notes=f'{cfg.steps} SGD steps, input {list(cfg.net_input)}, '
                      f'{cfg.net_channels} channels, TF32 off')


# --------------------------------------------------------------------------- autocast
def part_amp(ctx: Context) -> dict:
    """bf16 and fp16 autocast training steps on the device: losses finite, parameters and
    statistics kept in float32 and finite, losses and first-step gradients close to the
    float32 run."""
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(cfg.small_groups)
    batches = make_batches(cfg.net_input, cfg.steps, cfg.seed)
    runs = ctx.cache.setdefault('fp32_runs', {})
    names = ['BN'] + list(METHODS + SYNCED)  # BN first: its errors are the scale
    items, bn_err = [], {}
    for i, name in enumerate(names):
        if ctx.budget.exhausted(essential=True):
            items += _skip_rest(names[i:])
            break
        case = cases[name]
        item = dict(name=name, status='passed')
        try:
            torch.manual_seed(cfg.seed)
            net = small_net(case, cfg.net_channels)
            if name not in runs:  # correctness ran it already, unless it was skipped
                with exact_fp32():
                    runs[name] = train_steps(copy.deepcopy(net), batches, dev)
            ref = runs[name]
            for key, dtype in AMP_DTYPES.items():
                run = train_steps(copy.deepcopy(net), batches, dev, amp=dtype)
                errs = compare_runs(run, ref)
                finite = bool(torch.isfinite(run['losses']).all()) and all(
                    bool(torch.isfinite(v).all()) for v in run['state'].values()
                    if torch.is_tensor(v) and v.is_floating_point())
                fp32_state = run['param_dtypes'] == ['torch.float32']
                ok = finite and fp32_state and _within(errs, TOLERANCES[key])
                res = {k: float(f'{errs[k]:.3g}') for k in ('output', 'grad', 'loss')}
                if name == 'BN':
                    bn_err[key] = errs['grad']
                elif bn_err.get(key):
                    res['grad_x_BN'] = round(errs['grad'] / bn_err[key], 2)
                res.update(finite=finite, fp32_state=fp32_state,
                           status='passed' if ok else 'failed')
                if not fp32_state:
                    res['dtypes'] = run['param_dtypes']
                item[key] = res
                if not ok:
                    item['status'] = 'failed'
        except Exception as exc:  # noqa: BLE001
            item.update(status='error', **error_text(exc))
        items.append(item)
        ctx.save(items)
        ctx.log(f'  amp {name}: {item["status"]}')
    return dict(items=items, tolerance={k: TOLERANCES[k] for k in AMP_DTYPES},
                notes=f'autocast on {dev.type}, {cfg.steps} steps, no loss scaling; errors '
                      'against the float32 run on the device; grad_x_BN: the gradient error '
                      'over BN\'s at the same precision')


# --------------------------------------------------------------------------- host syncs
def _sync_debug(step: Callable[[], None]) -> dict:
    """``torch.cuda.set_sync_debug_mode``: 'warn' lists every synchronising call with the
    Python line that made it, then 'error' must not raise."""
    out = {}
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)  # before our own synchronize below
        torch.cuda.synchronize()
    syncs = [w for w in caught if 'synchroniz' in str(w.message).lower()]
    out['warn_mode_syncs'] = len(syncs)
    out['where'] = sorted({f'{w.filename}:{w.lineno}' for w in syncs})[:8]
    torch.cuda.set_sync_debug_mode('error')
    try:
        step()
        out['error_mode'] = 'no error'
    except RuntimeError as exc:
        out['error_mode'] = str(exc)[:300]
    finally:
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
    return out


def part_host_syncs(ctx: Context) -> dict:
    """Warm training steps (forward, backward, SGD step) of every norm must not synchronise
    with the host: counted by :mod:`mmnorm_plugin.benchmarks.sync_count` on any device, and on
    CUDA by ``torch.cuda.set_sync_debug_mode`` (which also sees what the counter cannot:
    blocking host-to-device copies, stream and event waits)."""
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(cfg.small_groups)
    names = list(METHODS + SYNCED + ('BN', ))
    modes = {'fp32': None, 'bf16': torch.bfloat16}
    items = []
    for i, name in enumerate(names):
        if ctx.budget.exhausted(essential=True):
            items += _skip_rest(names[i:])
            break
        item = dict(name=name, status='passed')
        try:
            for mode, amp in modes.items():
                torch.manual_seed(cfg.seed)
                net = small_net(cases[name], cfg.net_channels).to(dev).train()
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
                batches = [(x.to(dev), y.to(dev))
                           for x, y in make_batches(cfg.net_input, 4, cfg.seed)]
                state = {'i': 0}

                def step():
                    x, y = batches[state['i'] % len(batches)]
                    state['i'] += 1
                    opt.zero_grad(set_to_none=True)
                    with autocast(dev, amp):
                        loss = nn.functional.cross_entropy(net(x).float(), y)
                    loss.backward()
                    opt.step()

                for _ in range(cfg.sync_warmup):  # windows fill, phases end
                    step()
                synchronize(dev)
                with count_host_syncs() as syncs:
                    step()
                res = dict(counted=syncs.total)
                if syncs.total:
                    res['ops'] = dict(syncs.counts)
                if ctx.cuda:
                    res.update(_sync_debug(step))
                    ok = (syncs.total == 0 and res['warn_mode_syncs'] == 0
                          and res['error_mode'] == 'no error')
                else:
                    res['sync_debug_mode'] = 'skipped: no CUDA'
                    ok = syncs.total == 0
                res['status'] = 'passed' if ok else 'failed'
                item[mode] = res
                if not ok:
                    item['status'] = 'failed'
        except Exception as exc:  # noqa: BLE001
            item.update(status='error', **error_text(exc))
        items.append(item)
        ctx.save(items)
        ctx.log(f'  host_syncs {name}: {item["status"]}')
    return dict(items=items, notes=f'after {cfg.sync_warmup} warm steps; fp32 and bf16 autocast')


# --------------------------------------------------------------------------- layer benchmark
BENCH_NORMS = ('BN', 'GN', 'CBN', 'MABN', 'BGN', 'BKN')


def _bench_block(ctx: Context, shape, amp: Optional[torch.dtype]) -> List[dict]:
    """Every norm of :data:`BENCH_NORMS` at one NCHW shape: the norm's forward and backward
    down to its input (its producing conv runs untimed, as in
    :func:`mmnorm_plugin.benchmarks.layer_benchmark.compare_norms`), the whole conv3x3 + norm layer, and
    for CBN its floor (conv3x3 + BN + one weight-gradient convolution, which CBN's exact
    ∂σ²/∂W needs)."""
    from torch.nn.grad import conv2d_weight

    from mmnorm_plugin.benchmarks.layer_benchmark import buffer_bytes
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(32)
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(shape, generator=gen).to(dev)
    base = nn.Conv2d(c, c, 3, padding=1, bias=False)
    grads = {}

    def grad_like(out):
        key = (out.dtype, tuple(out.shape))
        if key not in grads:
            grads[key] = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(
                device=dev, dtype=out.dtype)
        return grads[key]

    convs, norms = {}, {}
    for name in BENCH_NORMS:
        conv = cases[name].conv(c, c, 3, padding=1, bias=False)
        conv.load_state_dict(base.state_dict())
        convs[name] = conv.to(dev).train()
        norms[name] = build_norm(cases[name], c).to(dev).train()
    floor_conv = copy.deepcopy(base).to(dev)
    floor_bn = nn.BatchNorm2d(c).to(dev)

    def new_iteration(*modules):
        def post():
            with torch.no_grad():
                for m in modules:
                    for p in m.parameters():
                        p.grad = None
                        p.add_(0.0)  # a new weight version, as an optimizer step makes
        return post

    def norm_job(name):
        conv, norm = convs[name], norms[name]
        params = [p for p in norm.parameters() if p.requires_grad]

        def prep():
            with autocast(dev, amp):
                return conv(x)

        def body(y):
            with autocast(dev, amp):
                out = norm(y)
            out.backward(grad_like(out), inputs=[y] + params)
        return prep, body, new_iteration(conv, norm)

    def layer_job(conv, norm, extra_wgrad=False):
        def body(_):
            with autocast(dev, amp):
                y = conv(x)
                out = norm(y)
            out.backward(grad_like(out))
            if extra_wgrad:
                conv2d_weight(x.to(y.dtype), conv.weight.shape, y.detach(), 1, 1)
        return None, body, new_iteration(conv, norm)

    norm_ms = time_jobs({k: norm_job(k) for k in BENCH_NORMS}, dev, cfg.bench_warmup,
                        cfg.bench_iters, deadline=ctx.budget.end())
    layer_jobs = {k: layer_job(convs[k], norms[k]) for k in BENCH_NORMS}
    layer_jobs['floor'] = layer_job(floor_conv, floor_bn, extra_wgrad=True)
    layer_ms = time_jobs(layer_jobs, dev, cfg.bench_warmup, cfg.bench_iters,
                         deadline=ctx.budget.end())

    rows = []
    for name in BENCH_NORMS:
        row = dict(name=name, shape=list(shape), dtype='bf16' if amp else 'fp32',
                   status='passed', norm_ms=round(norm_ms[name], 4),
                   x_BN=round(norm_ms[name] / norm_ms['BN'], 3),
                   x_GN=round(norm_ms[name] / norm_ms['GN'], 3),
                   layer_ms=round(layer_ms[name], 4),
                   layer_x_BN=round(layer_ms[name] / layer_ms['BN'], 3),
                   state_mb=round(buffer_bytes(norms[name]) / 2**20, 4))
        if name == 'CBN':
            row['floor_ms'] = round(layer_ms['floor'], 4)
            row['layer_x_floor'] = round(layer_ms[name] / layer_ms['floor'], 3)
        prep, body, post = norm_job(name)
        y = prep()
        counter = OpCounter()
        with counter:
            body(y)
        post()
        row['aten_ops'] = counter.total
        try:
            y = prep()
            row['launches'] = count_device_launches(lambda: body(y), dev)
            post()
        except Exception as exc:  # noqa: BLE001  (the profiler is optional)
            row['launches'] = None
            row['launches_error'] = error_text(exc)['error']
        if row['launches'] is None and not ctx.cuda:
            row['launches'] = 'skipped: no CUDA'
        if ctx.cuda:
            y = prep()
            synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            body(y)
            synchronize(dev)
            row['peak_mb'] = round((torch.cuda.max_memory_allocated(dev) - before) / 2**20, 2)
            post()
        rows.append(row)
    return rows


def part_layer_bench(ctx: Context) -> dict:
    cfg = ctx.cfg
    items = []
    blocks = [(label, shape, dt) for label, shape in cfg.bench_shapes.items()
              for dt in cfg.bench_dtypes]
    for i, (label, shape, dt) in enumerate(blocks):
        if ctx.budget.exhausted(essential=i == 0):  # the first item whenever time is left
            items += [dict(name=f'{lab} {d}', status='skipped', reason='budget')
                      for lab, _, d in blocks[i:]]
            break
        try:
            rows = _bench_block(ctx, shape, AMP_DTYPES.get(dt))
            for r in rows:
                r['block'] = label
            items += rows
        except Exception as exc:  # noqa: BLE001
            items.append(dict(name=f'{label} {dt}', status='error', **error_text(exc)))
        ctx.save(items)
        ctx.log(f'  layer_bench {label} {dt}: done')
    timer = 'CUDA events' if ctx.cuda else 'perf_counter'
    return dict(items=items,
                notes=f'median of {cfg.bench_iters} after {cfg.bench_warmup} warm-up, {timer}; '
                      'norm_ms: norm fwd+bwd (conv untimed), layer_ms: conv3x3+norm fwd+bwd; '
                      'floor: conv3x3+BN+one weight-gradient conv; launches: device activities '
                      'of one norm fwd+bwd (torch.profiler); bf16 = autocast')


# --------------------------------------------------------------------------- torch.compile
def _graph_breaks(net: nn.Module, x: torch.Tensor) -> dict:
    ex = torch._dynamo.explain(net)(x)
    reasons = []
    for r in ex.break_reasons[:5]:
        text = str(getattr(r, 'reason', r)).strip().splitlines()
        reasons.append((text[0] if text else '')[:240])
    return dict(graphs=ex.graph_count, graph_breaks=ex.graph_break_count,
                break_reasons=reasons)


#: BN first (if it fails, the compiler setup is at fault, not a norm), then by expected cost
COMPILE_ORDER = ('BN', 'BGN', 'MABN', 'BKN', 'CBN', 'SyncBGN', 'SyncBKN', 'SyncCBN')


def part_compile(ctx: Context) -> dict:
    """``torch.compile`` training steps of every norm: equal to eager (losses, first-step
    gradients, state) and timed against eager. Graph breaks are counted with
    ``torch._dynamo.explain`` (on a copy: its forward updates the norm's state) and reported,
    not failed; a norm that fails to compile is recorded and the next one runs. One compiled
    model per norm serves the equality steps and then the timing (TF32 stays off for both, so
    no global-state guard triggers a recompile); ``unique_graphs`` counts its graphs,
    recompiles included."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(cfg.small_groups)
    names = list(COMPILE_ORDER)
    batches = make_batches(cfg.compile_input, cfg.compile_steps, cfg.seed)
    items = []
    for i, name in enumerate(names):
        if ctx.budget.exhausted(essential=i == 0):  # the first item whenever time is left
            items += _skip_rest(names[i:])
            break
        item = dict(name=name, status='passed', backend=cfg.compile_backend)
        try:
            torch.manual_seed(cfg.seed)
            net = small_net(cases[name], cfg.compile_channels).to(dev)
            # what compiled training needs (norms/conv_origin.py): CBN and BKN find their
            # producing conv through forward taps, and one eager step records BKN's layer chain;
            # taps survive deepcopy, and both copies below share this step
            tap_convolutions(net)
            train_steps(net, make_batches(cfg.compile_input, 1, cfg.seed + 2), dev)
            torch._dynamo.reset()
            try:
                item.update(_graph_breaks(copy.deepcopy(net).to(dev).train(),
                                          batches[0][0].to(dev)))
            except Exception as exc:  # noqa: BLE001
                item['explain_error'] = error_text(exc)['error']
            torch._dynamo.reset()
            graphs_before = int(counters['stats'].get('unique_graphs', 0))
            with exact_fp32():
                eager_model, model = copy.deepcopy(net), copy.deepcopy(net)
                eager = train_steps(eager_model, batches, dev)
                compiled = torch.compile(model, backend=cfg.compile_backend)
                t0 = time.perf_counter()
                run = train_steps(model, batches, dev, step_fn=compiled)
                item['first_steps_s'] = round(time.perf_counter() - t0, 2)
                errs = compare_runs(run, eager)
                item['vs_eager'] = _fmt_errs(errs)
                if not _within(errs, TOLERANCES['compile']):
                    item['status'] = 'failed'
                item.update(_compile_speed(ctx, eager_model, model, compiled))
            item['unique_graphs'] = int(counters['stats'].get('unique_graphs', 0)) - graphs_before
        except Exception as exc:  # noqa: BLE001
            item.update(status='error', **error_text(exc))
        finally:
            torch._dynamo.reset()
        items.append(item)
        ctx.save(items)
        ctx.log(f'  compile {name}: {item["status"]} (graph breaks: {item.get("graph_breaks")})')
    return dict(items=items, tolerance=TOLERANCES['compile'],
                notes=f'backend {cfg.compile_backend}, input {list(cfg.compile_input)}, '
                      f'{cfg.compile_channels} channels; equality over {cfg.compile_steps} '
                      f'steps, then speed: median of up to {cfg.compile_time_steps} steps '
                      '(TF32 off)')


def _compile_speed(ctx: Context, eager_model: nn.Module, model: nn.Module,
                   compiled: Callable) -> dict:
    """Median training-step time (forward, backward, SGD step), compiled vs eager, going on
    from the equality steps (already on the device)."""
    cfg, dev = ctx.cfg, ctx.device
    x, y = make_batches(cfg.compile_input, 1, cfg.seed + 1)[0]
    x, y = x.to(dev), y.to(dev)
    jobs = {}
    for label, module, fwd in (('eager', eager_model, eager_model),
                               ('compiled', model, compiled)):
        opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)

        def body(_, fwd=fwd, opt=opt):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(fwd(x).float(), y).backward()
            opt.step()
        jobs[label] = (None, body, None)
    # past the part's share one round is enough: a norm that recompiles every step can take
    # seconds per compiled step
    ms = time_jobs(jobs, dev, warmup=1, iters=cfg.compile_time_steps,
                   deadline=ctx.budget.end(), min_iters=1)
    return dict(eager_ms=round(ms['eager'], 3), compiled_ms=round(ms['compiled'], 3),
                speedup=round(ms['eager'] / ms['compiled'], 3))


# --------------------------------------------------------------------------- whole model
MODEL_NORMS = ('BN', 'GN', 'CBN', 'MABN', 'BGN', 'BKN')


def _r50_fpn(case, depth: int) -> nn.Module:
    from mmdet.registry import MODELS
    norm_cfg = dict(case.norm_cfg, requires_grad=True)
    backbone = MODELS.build(dict(type='ResNet', depth=depth, num_stages=4,
                                 out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_cfg=norm_cfg,
                                 norm_eval=False, style='pytorch', conv_cfg=case.conv_cfg))
    widths = [64, 128, 256, 512] if depth in (18, 34) else [256, 512, 1024, 2048]
    neck = MODELS.build(dict(type='FPN', in_channels=widths, out_channels=256, num_outs=5,
                             norm_cfg=norm_cfg, conv_cfg=case.conv_cfg))
    return nn.Sequential(backbone, neck)


def part_model(ctx: Context) -> dict:
    """A training step (forward, backward, SGD step) of ResNet + FPN built from mmdet's
    modules (no compiled mmcv op is needed), the norm in backbone and neck, timed against the
    BN and GN twins; losses must stay finite and the step must not sync with the host."""
    from mmengine.registry import init_default_scope

    import mmnorm_plugin  # noqa: F401  (registers the norms)
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    cfg, dev = ctx.cfg, ctx.device
    init_default_scope('mmdet')
    cases = norm_cases(32)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.model_input, generator=gen).to(dev)
    items = []
    for d, dt in enumerate(cfg.model_dtypes):
        if ctx.budget.exhausted(essential=d == 0):  # the first dtype whenever time is left
            items += [dict(name=n, dtype=dt, status='skipped', reason='budget')
                      for n in MODEL_NORMS]
            continue
        amp = AMP_DTYPES.get(dt)
        models, jobs, losses, info = {}, {}, {}, {}
        for name in MODEL_NORMS:
            if name != 'BN' and ctx.budget.exhausted():  # BN: the scale of the ratios
                info[name] = dict(status='skipped', reason='budget')
                continue
            try:
                torch.manual_seed(cfg.seed)
                model = _r50_fpn(cases[name], cfg.model_depth).to(dev).train()
                opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
                losses[name] = []

                def body(_, model=model, opt=opt, name=name):
                    opt.zero_grad(set_to_none=True)
                    with autocast(dev, amp):
                        outs = model(x)
                    loss = sum(o.float().square().mean() for o in outs)
                    loss.backward()
                    opt.step()
                    losses[name].append(loss.detach())
                body(None)  # first step outside timing (allocations, cuDNN choice)
                with count_host_syncs() as syncs:
                    body(None)
                info[name] = dict(syncs=syncs.total)
                if ctx.cuda:
                    info[name]['sync_debug'] = _sync_debug(lambda b=body: b(None))
                models[name], jobs[name] = model, (None, body, None)
            except Exception as exc:  # noqa: BLE001
                info[name] = dict(status='error', **error_text(exc))
        ms = (time_jobs(jobs, dev, cfg.model_warmup, cfg.model_iters,
                        deadline=ctx.budget.end()) if jobs else {})
        for name in MODEL_NORMS:
            item = dict(name=name, dtype=dt, **info.get(name, {}))
            if item.get('status') in ('error', 'skipped'):
                items.append(item)
                continue
            finite = bool(torch.isfinite(torch.stack(losses[name])).all())
            sd = item.get('sync_debug', {})
            ok = finite and item['syncs'] == 0 and sd.get('error_mode', 'no error') == 'no error'
            item.update(status='passed' if ok else 'failed', finite=finite,
                        ms=round(ms[name], 3),
                        x_BN=round(ms[name] / ms['BN'], 3) if 'BN' in ms else None,
                        x_GN=round(ms[name] / ms['GN'], 3) if 'GN' in ms else None)
            items.append(item)
        del models, jobs
        if ctx.cuda:
            torch.cuda.empty_cache()
        ctx.save(items)
        ctx.log(f'  model {dt}: done')
    return dict(items=items,
                notes=f'ResNet-{cfg.model_depth} + FPN (mmdet modules), input '
                      f'{list(cfg.model_input)}, loss = Σ mean(P_i²); median of '
                      f'{cfg.model_iters} steps after {cfg.model_warmup} warm-up')


#: in run order; compile last: one compile can overrun its share by minutes (a norm that
#: recompiles every step), which then delays nothing else
PART_FUNCTIONS: Dict[str, Callable[[Context], dict]] = {
    'correctness': part_correctness,
    'amp': part_amp,
    'host_syncs': part_host_syncs,
    'layer_bench': part_layer_bench,
    'model': part_model,
    'compile': part_compile,
}
