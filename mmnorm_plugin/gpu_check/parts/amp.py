"""``amp``: bf16 and fp16 autocast training steps against the float32 run."""
import copy
from typing import List

import torch

from ..cases import (METHODS, SYNCED, compare_runs, make_batches, norm_cases, small_net,
                     train_steps)
from ..measure import exact_fp32
from .base import AMP_DTYPES, TOLERANCES, Context, Part, cell, problem, run_items, within

__all__ = ['PART']


def run(ctx: Context) -> dict:
    """bf16 and fp16 autocast training steps on the device: losses finite, parameters and
    statistics kept in float32 and finite, losses and first-step gradients close to the
    float32 run (``correctness``'s, or made here when that part did not run the norm)."""
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(cfg.small_groups)
    batches = make_batches(cfg.net_input, cfg.steps, cfg.seed)
    runs = ctx.cache.setdefault('fp32_runs', {})
    bn_err = {}  # BN's gradient error per dtype: the scale of the others'

    def measure(name: str, item: dict) -> None:
        torch.manual_seed(cfg.seed)
        net = small_net(cases[name], cfg.net_channels)
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
            ok = finite and fp32_state and within(errs, TOLERANCES[key])
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

    # BN first: its errors are the scale
    items = run_items(ctx, 'amp', ['BN'] + list(METHODS + SYNCED), measure)
    return dict(items=items, tolerance={k: TOLERANCES[k] for k in AMP_DTYPES},
                notes=f'autocast on {dev.type}, {cfg.steps} steps, no loss scaling; errors '
                      'against the float32 run on the device; grad_x_BN: the gradient error '
                      'over BN\'s at the same precision')


def rows(part: dict) -> List[str]:
    lines = ['autocast vs fp32 on the device (rel. error of first output, first grads, '
             'grad error over BN\'s)',
             f'{"norm":<9}{"status":<8}{"bf16 out":>9}{"grad":>8}{"x BN":>6}'
             f'{"fp16 out":>9}{"grad":>8}{"x BN":>6}']
    for it in part.get('items', []):
        cols = ''
        for key in ('bf16', 'fp16'):
            r = it.get(key, {})
            cols += (f'{cell(r.get("output")):>9}{cell(r.get("grad")):>8}'
                     f'{cell(r.get("grad_x_BN"), "{:.1f}"):>6}')
        lines.append(f'{it["name"]:<9}{it["status"]:<8}{cols} {problem(it)[:60]}')
    return lines


PART = Part('amp', share=0.07, run=run, rows=rows)
