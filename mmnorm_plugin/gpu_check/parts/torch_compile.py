"""``compile``: ``torch.compile`` training steps equal to eager, graph breaks, speed."""
import copy
import time
from typing import Callable, List

import torch
from torch import nn

from ...norms.conv_origin import tap_convolutions
from ..cases import compare_runs, make_batches, norm_cases, small_net, train_steps
from ..measure import error_text, exact_fp32, time_jobs
from .base import TOLERANCES, Context, Part, cell, fmt_errs, problem, run_items, within, worst

__all__ = ['PART', 'COMPILE_ORDER']

#: BN first (if it fails, the compiler setup is at fault, not a norm), then by expected cost
COMPILE_ORDER = ('BN', 'BGN', 'MABN', 'BKN', 'CBN', 'SyncBGN', 'SyncBKN', 'SyncCBN')


def run(ctx: Context) -> dict:
    """``torch.compile`` training steps of every norm: equal to eager (losses, first-step
    gradients, state) and timed against eager. Graph breaks are counted with
    ``torch._dynamo.explain`` (on a copy: its forward updates the norm's state) and reported,
    not failed; a norm that fails to compile is recorded and the next one runs. One compiled
    model per norm serves the equality steps and then the timing (TF32 stays off for both, so
    no global-state guard triggers a recompile); ``unique_graphs`` counts its graphs,
    recompiles included."""
    import torch._dynamo
    cfg = ctx.cfg
    cases = norm_cases(cfg.small_groups)

    def measure(name: str, item: dict) -> None:
        item['backend'] = cfg.compile_backend
        try:
            _compile_one(ctx, cases[name], item)
        finally:
            torch._dynamo.reset()

    items = run_items(ctx, 'compile', list(COMPILE_ORDER), measure, essential=False,
                      note=lambda item: f' (graph breaks: {item.get("graph_breaks")})')
    return dict(items=items, tolerance=TOLERANCES['compile'],
                notes=f'backend {cfg.compile_backend}, input {list(cfg.compile_input)}, '
                      f'{cfg.compile_channels} channels; equality over {cfg.compile_steps} '
                      f'steps, then speed: median of up to {cfg.compile_time_steps} steps '
                      '(TF32 off)')


def _compile_one(ctx: Context, case, item: dict) -> None:
    """Graph breaks, equality with eager and speed of one norm's small network."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    cfg, dev = ctx.cfg, ctx.device
    batches = make_batches(cfg.compile_input, cfg.compile_steps, cfg.seed)
    torch.manual_seed(cfg.seed)
    net = small_net(case, cfg.compile_channels).to(dev)
    # what compiled training needs: CBN and BKN find their producing conv through forward
    # taps, and one eager step records BKN's layer chain; taps survive deepcopy, and both
    # copies below share this step
    tap_convolutions(net)
    train_steps(net, make_batches(cfg.compile_input, 1, cfg.seed + 2), dev)
    torch._dynamo.reset()
    try:
        item.update(_graph_breaks(copy.deepcopy(net).to(dev).train(), batches[0][0].to(dev)))
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
        item['vs_eager'] = fmt_errs(errs)
        if not within(errs, TOLERANCES['compile']):
            item['status'] = 'failed'
        item.update(_compile_speed(ctx, eager_model, model, compiled))
    item['unique_graphs'] = int(counters['stats'].get('unique_graphs', 0)) - graphs_before


def _graph_breaks(net: nn.Module, x: torch.Tensor) -> dict:
    ex = torch._dynamo.explain(net)(x)
    reasons = []
    for r in ex.break_reasons[:5]:
        text = str(getattr(r, 'reason', r)).strip().splitlines()
        reasons.append((text[0] if text else '')[:240])
    return dict(graphs=ex.graph_count, graph_breaks=ex.graph_break_count,
                break_reasons=reasons)


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


def rows(part: dict) -> List[str]:
    lines = [f'torch.compile vs eager ({part.get("notes", "")[:60]})',
             f'{"norm":<9}{"status":<8}{"graphs":>7}{"breaks":>7}{"max err":>9}'
             f'{"eager ms":>10}{"comp ms":>9}{"speedup":>8}{"1st s":>7}']
    for it in part.get('items', []):
        lines.append(f'{it["name"]:<9}{it["status"]:<8}{cell(it.get("graphs"), "{}"):>7}'
                     f'{cell(it.get("graph_breaks"), "{}"):>7}{cell(worst(it.get("vs_eager"))):>9}'
                     f'{cell(it.get("eager_ms"), "{:.2f}"):>10}'
                     f'{cell(it.get("compiled_ms"), "{:.2f}"):>9}'
                     f'{cell(it.get("speedup"), "{:.2f}"):>8}'
                     f'{cell(it.get("first_steps_s"), "{:.1f}"):>7} {problem(it)[:50]}')
        for reason in it.get('break_reasons', [])[:2]:
            lines.append(f'{"":<17}break: {reason[:100]}')
    return lines


PART = Part('compile', share=0.42, run=run, rows=rows)
