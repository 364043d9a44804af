"""Per-layer fwd+bwd time and memory of BGN against nn.BatchNorm2d (target: <= 1.2x BN).

A thin CLI over :func:`mmnorm_plugin.benchmarks.layer_benchmark.compare_norms`. Default shapes are those
BGN meets in the BGN configs: FPN levels P2/P3 of an 800x1216 image pair (N=2, C=256) and the
4conv1fc box head on 512 RoIs (N=512, C=256, 7x7). Times are the norm's own fwd+bwd cost on a
conv's output, medians of interleaved runs; run with OMP_NUM_THREADS=1 on a shared machine.

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_bgn.py
    OMP_NUM_THREADS=1 python tools/benchmarks/bench_bgn.py --groups 1 32 --shapes 2,256,100,152
"""
import argparse
import functools

import torch
from torch import nn

from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.benchmarks.layer_benchmark import (DETECTION_SHAPES, compare_norms, format_rows,
                                           parse_shape)

TARGET = 1.2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shapes', type=parse_shape, nargs='+',
                        default=list(DETECTION_SHAPES), help='N,C,H,W ...')
    parser.add_argument('--groups', type=int, nargs='+', default=[32],
                        help='num_groups values to compare (default: 32, the configs\' value)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=7)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    candidates = {'BN': nn.BatchNorm2d}
    for g in args.groups:
        candidates[f'BGN(G={g})'] = functools.partial(BGN, num_groups=g)
    rows = compare_norms(candidates, args.shapes, baseline='BN', warmup=args.warmup,
                         iters=args.iters)
    print(format_rows(rows))
    worst = max(r['time_ratio'] for r in rows if r['name'] != 'BN')
    print(f'\nworst BGN time ratio vs BN: {worst:.2f}x (target <= {TARGET}x): '
          f'{"met" if worst <= TARGET else "NOT met"}')


if __name__ == '__main__':
    main()
