"""``correctness``: every norm and synced variant, float32 on the device against the CPU."""
import copy
from typing import List

import torch

from ..cases import (METHODS, REFERENCES, SYNCED, compare_runs, make_batches, norm_cases,
                     small_net, train_steps)
from ..measure import exact_fp32
from .base import TOLERANCES, Context, Part, cell, fmt_errs, problem, run_items, within, worst

__all__ = ['PART']


def run(ctx: Context) -> dict:
    """Every norm and synced variant (world size 1, no process group): a few SGD steps of the
    small network in float32 on the device against the same steps on the CPU in float64 and
    in float32; synced variants also against their unsynced layer on the device. The device
    runs are kept in ``ctx.cache['fp32_runs']`` (the reference of ``amp``)."""
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(cfg.small_groups)
    batches = make_batches(cfg.net_input, cfg.steps, cfg.seed)
    cpu = torch.device('cpu')
    tol = TOLERANCES['fp32']
    runs = ctx.cache.setdefault('fp32_runs', {})

    def measure(name: str, item: dict) -> None:
        case = cases[name]
        with exact_fp32():
            torch.manual_seed(cfg.seed)
            net = small_net(case, cfg.net_channels)
            ref64 = train_steps(copy.deepcopy(net), batches, cpu, torch.float64)
            ref32 = train_steps(copy.deepcopy(net), batches, cpu, torch.float32)
            run = (train_steps(copy.deepcopy(net), batches, dev, torch.float32)
                   if ctx.cuda else ref32)
        runs[name] = run
        item['vs_cpu_fp64'] = fmt_errs(compare_runs(run, ref64))
        item['vs_cpu_fp32'] = (fmt_errs(compare_runs(run, ref32)) if ctx.cuda
                               else 'the device is the CPU')
        checks = [item['vs_cpu_fp64']] + ([item['vs_cpu_fp32']] if ctx.cuda else [])
        if case.unsynced and case.unsynced in runs:
            item['vs_unsynced'] = fmt_errs(compare_runs(run, runs[case.unsynced]))
            checks.append(item['vs_unsynced'])
        item['losses'] = [round(v, 6) for v in run['losses'].tolist()]
        if not all(within(c, tol) for c in checks):
            item['status'] = 'failed'

    items = run_items(ctx, 'correctness', list(METHODS + SYNCED + REFERENCES), measure)
    return dict(items=items, tolerance=tol,
                notes=f'{cfg.steps} SGD steps, input {list(cfg.net_input)}, '
                      f'{cfg.net_channels} channels, TF32 off')


def rows(part: dict) -> List[str]:
    lines = ['correctness (max rel. error; fp32 on the device vs CPU fp64 | CPU fp32)',
             f'{"norm":<9}{"status":<8}{"output":>9}{"grad":>9}{"loss":>9}{"state":>9}'
             f'{"| fp32":>9}{"unsynced":>10}']
    for it in part.get('items', []):
        e64 = it.get('vs_cpu_fp64', {})
        lines.append(f'{it["name"]:<9}{it["status"]:<8}{cell(e64.get("output")):>9}'
                     f'{cell(e64.get("grad")):>9}{cell(e64.get("loss")):>9}'
                     f'{cell(e64.get("state")):>9}{cell(worst(it.get("vs_cpu_fp32"))):>9}'
                     f'{cell(worst(it.get("vs_unsynced"))):>10} {problem(it)[:60]}')
    return lines


PART = Part('correctness', share=0.10, run=run, rows=rows)
