"""``host_syncs``: a warm training step must not synchronise with the host."""
from typing import List

import torch
from torch import nn

from ..cases import METHODS, SYNCED, autocast, make_batches, norm_cases, small_net
from ..measure import sync_debug, synchronize
from .base import Context, Part, cell, problem, run_items

__all__ = ['PART']

MODES = {'fp32': None, 'bf16': torch.bfloat16}


def run(ctx: Context) -> dict:
    """Warm training steps (forward, backward, SGD step) of every norm must not synchronise
    with the host: counted by :mod:`mmnorm_plugin.benchmarks.sync_count` on any device, and on
    CUDA by ``torch.cuda.set_sync_debug_mode`` (which also sees what the counter cannot:
    blocking host-to-device copies, stream and event waits)."""
    cfg = ctx.cfg
    cases = norm_cases(cfg.small_groups)

    def measure(name: str, item: dict) -> None:
        for mode, amp in MODES.items():
            item[mode] = res = _warm_step_syncs(ctx, cases[name], amp)
            if res['status'] != 'passed':
                item['status'] = 'failed'

    items = run_items(ctx, 'host_syncs', list(METHODS + SYNCED + ('BN', )), measure)
    return dict(items=items, notes=f'after {cfg.sync_warmup} warm steps; fp32 and bf16 autocast')


def _warm_step_syncs(ctx: Context, case, amp) -> dict:
    """Host syncs of one training step of the small network after ``cfg.sync_warmup`` steps
    (windows filled, phases over)."""
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    cfg, dev = ctx.cfg, ctx.device
    torch.manual_seed(cfg.seed)
    net = small_net(case, cfg.net_channels).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    batches = [(x.to(dev), y.to(dev)) for x, y in make_batches(cfg.net_input, 4, cfg.seed)]
    state = {'i': 0}

    def step():
        x, y = batches[state['i'] % len(batches)]
        state['i'] += 1
        opt.zero_grad(set_to_none=True)
        with autocast(dev, amp):
            loss = nn.functional.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()

    for _ in range(cfg.sync_warmup):
        step()
    synchronize(dev)
    with count_host_syncs() as syncs:
        step()
    res = dict(counted=syncs.total)
    if syncs.total:
        res['ops'] = dict(syncs.counts)
    if ctx.cuda:
        res.update(sync_debug(step))
        ok = (syncs.total == 0 and res['warn_mode_syncs'] == 0
              and res['error_mode'] == 'no error')
    else:
        res['sync_debug_mode'] = 'skipped: no CUDA'
        ok = syncs.total == 0
    res['status'] = 'passed' if ok else 'failed'
    return res


def _debug_cell(r: dict) -> str:
    dbg = r.get('error_mode', r.get('sync_debug_mode', '-'))
    dbg = 'ok' if dbg == 'no error' else ('no CUDA' if 'no CUDA' in str(dbg) else str(dbg)[:12])
    if r.get('warn_mode_syncs'):
        dbg = f'{r["warn_mode_syncs"]} syncs'
    return dbg


def rows(part: dict) -> List[str]:
    lines = ['host syncs in a warm training step (counted | sync debug mode)',
             f'{"norm":<9}{"status":<8}{"fp32":>6}{"debug":>14}{"bf16":>6}{"debug":>14}']
    for it in part.get('items', []):
        cols = ''.join(f'{cell(it.get(mode, {}).get("counted"), "{}"):>6}'
                       f'{_debug_cell(it.get(mode, {})):>14}' for mode in MODES)
        lines.append(f'{it["name"]:<9}{it["status"]:<8}{cols} {problem(it)[:60]}')
    return lines


PART = Part('host_syncs', share=0.06, run=run, rows=rows)
