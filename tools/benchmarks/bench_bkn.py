"""BKN vs BN: per-layer cost (compare_norms) and whole-backbone cost with the layer chain.

compare_norms feeds each norm ``Conv3x3(x)`` for a fresh ``x``: a BKN there has no predecessor and
runs its plain-BN path. The prior (closed form or the official sample) only exists inside a chain,
so ``--backbone`` also times forward+backward of mmdet's ResNet-50 (norm_eval=False) with BN and
with BKN, interleaved, and reports the ratio of the whole-model step.

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_bkn.py [--backbone] [--size 128]
"""
import argparse
import statistics
import time

import torch
from torch import nn

from mmnorm_plugin.norms.bkn import BKN
from mmnorm_plugin.benchmarks.layer_benchmark import compare_norms, format_rows


def backbone_step_ratio(size: int, batch: int, iters: int, prior_mode: str) -> dict:
    from mmdet.models.backbones import ResNet
    x = torch.randn(batch, 3, size, size)
    models = {}
    for name, cfg in (('BN', dict(type='BN')),
                      ('BKN', dict(type='BKN', prior_mode=prior_mode))):
        torch.manual_seed(0)
        models[name] = ResNet(depth=50, norm_eval=False, norm_cfg=cfg)
        models[name].train()
    times = {k: [] for k in models}
    for i in range(iters + 2):
        for name, model in models.items():
            t0 = time.perf_counter()
            sum(o.sum() for o in model(x)).backward()
            if i >= 2:  # warm-up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(bn_s=med['BN'], bkn_s=med['BKN'], ratio=med['BKN'] / med['BN'])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--backbone', action='store_true', help='also time mmdet ResNet-50')
    parser.add_argument('--size', type=int, default=128, help='backbone input side')
    parser.add_argument('--batch', type=int, default=2, help='backbone images per batch')
    args = parser.parse_args()
    candidates = {'BN': lambda c: nn.BatchNorm2d(c),
                  'BKN (no predecessor)': lambda c: BKN(c)}
    rows = compare_norms(candidates, [(2, 64, 56, 56), (2, 256, 14, 14), (1, 256, 7, 7)],
                         iters=args.iters)
    print(format_rows(rows))
    if args.backbone:
        for mode in ('closed_form', 'sample'):
            r = backbone_step_ratio(args.size, args.batch, args.iters, mode)
            print(f'ResNet-50 fwd+bwd, {args.batch}x3x{args.size}x{args.size}, prior_mode={mode}: '
                  f'BN {r["bn_s"] * 1e3:.0f} ms, BKN {r["bkn_s"] * 1e3:.0f} ms, '
                  f'x{r["ratio"]:.2f}')


if __name__ == '__main__':
    main()
