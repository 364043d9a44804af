"""``model``: a ResNet-50 + FPN training step per norm against its BN and GN twins."""
from typing import Dict, List

import torch
from torch import nn

from ..cases import autocast, norm_cases
from ..measure import error_text, sync_debug, time_jobs
from .base import AMP_DTYPES, Context, Part, cell, problem, run_items

__all__ = ['PART', 'MODEL_NORMS']

MODEL_NORMS = ('BN', 'GN', 'CBN', 'MABN', 'BGN', 'BKN')


def run(ctx: Context) -> dict:
    """A training step (forward, backward, SGD step) of ResNet + FPN built from mmdet's
    modules (no compiled mmcv op is needed), the norm in backbone and neck, timed against the
    BN and GN twins; losses must stay finite and the step must not sync with the host. One
    block of items per dtype of ``cfg.model_dtypes``."""
    from mmengine.registry import init_default_scope

    import mmnorm_plugin  # noqa: F401  (registers the norms)
    cfg = ctx.cfg
    init_default_scope('mmdet')
    x = torch.randn(cfg.model_input, generator=torch.Generator().manual_seed(cfg.seed)).to(
        ctx.device)

    def skipped(dt: str) -> List[dict]:
        return [dict(name=n, dtype=dt, status='skipped', reason='budget') for n in MODEL_NORMS]

    def measure(dt: str, item: dict) -> List[dict]:
        try:
            return _model_block(ctx, x, dt)
        finally:  # the block's models are gone: give their memory back before the next one
            if ctx.cuda:
                torch.cuda.empty_cache()

    items = run_items(ctx, 'model', list(cfg.model_dtypes), measure, essential=False,
                      skipped=skipped)
    return dict(items=items,
                notes=f'ResNet-{cfg.model_depth} + FPN (mmdet modules), input '
                      f'{list(cfg.model_input)}, loss = Σ mean(P_i²); median of '
                      f'{cfg.model_iters} steps after {cfg.model_warmup} warm-up')


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


def _model_block(ctx: Context, x: torch.Tensor, dt: str) -> List[dict]:
    """Every norm of :data:`MODEL_NORMS` at one dtype: built and checked one by one (a norm
    that fails is recorded, the next one is built), then timed interleaved."""
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    cfg, dev = ctx.cfg, ctx.device
    cases = norm_cases(32)
    amp = AMP_DTYPES.get(dt)
    jobs, losses, info = {}, {}, {}
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
                info[name]['sync_debug'] = sync_debug(lambda b=body: b(None))
            jobs[name] = (None, body, None)
        except Exception as exc:  # noqa: BLE001
            info[name] = dict(status='error', **error_text(exc))
    ms = (time_jobs(jobs, dev, cfg.model_warmup, cfg.model_iters, deadline=ctx.budget.end())
          if jobs else {})
    return [_model_item(name, dt, info.get(name, {}), losses.get(name), ms)
            for name in MODEL_NORMS]


def _model_item(name: str, dt: str, info: dict, losses, ms: Dict[str, float]) -> dict:
    item = dict(name=name, dtype=dt, **info)
    if item.get('status') in ('error', 'skipped'):
        return item
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    sd = item.get('sync_debug', {})
    ok = finite and item['syncs'] == 0 and sd.get('error_mode', 'no error') == 'no error'
    item.update(status='passed' if ok else 'failed', finite=finite, ms=round(ms[name], 3),
                x_BN=round(ms[name] / ms['BN'], 3) if 'BN' in ms else None,
                x_GN=round(ms[name] / ms['GN'], 3) if 'GN' in ms else None)
    return item


def rows(part: dict) -> List[str]:
    lines = [f'whole model ({part.get("notes", "")[:70]})',
             f'{"norm":<6}{"dt":<6}{"status":<8}{"ms":>9}{"x BN":>7}{"x GN":>7}{"syncs":>6}']
    for it in part.get('items', []):
        lines.append(f'{it["name"]:<6}{it.get("dtype", ""):<6}{it["status"]:<8}'
                     f'{cell(it.get("ms"), "{:.2f}"):>9}{cell(it.get("x_BN"), "{:.2f}"):>7}'
                     f'{cell(it.get("x_GN"), "{:.2f}"):>7}{cell(it.get("syncs"), "{}"):>6} '
                     f'{problem(it)[:60]}')
    return lines


PART = Part('model', share=0.18, run=run, rows=rows)
