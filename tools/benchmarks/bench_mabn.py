"""Per-layer fwd+bwd time and memory of MABN and CenConv2d+MABN against BN (target: MABN <= 1.5x BN).

A thin CLI over :func:`mmnorm_plugin.benchmarks.layer_benchmark.compare_norms`. Default shapes are those
MABN meets in the MABN configs: FPN levels P2/P3 of an 800x1216 image pair (N=2, C=256) and the
4conv1fc box head on 512 RoIs (N=512, C=256, 7x7). Rows:

* ``BN`` / ``MABN``: the norm alone after the harness' Conv3x3 (ratio = MABN / BN);
* ``Conv2d+BN`` / ``CenConv2d+MABN``: a further 3x3 conv + norm pair, so that the weight
  centralization is timed too; their ratio is printed below the table.

MABN runs in its steady state (iteration counter past warm-up and renorm hold, so the SMA and
the renorm factor are active), set directly instead of by thousands of warm-up steps. Times
are the layers' own cost (block minus the harness conv), medians of interleaved runs; run with
OMP_NUM_THREADS=1 on a shared machine and read ratios, not absolute times.

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_mabn.py
    OMP_NUM_THREADS=1 python tools/benchmarks/bench_mabn.py --shapes 512,256,7,7 --iters 9
"""
import argparse

from torch import nn

from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms.mabn import MABN
from mmnorm_plugin.benchmarks.layer_benchmark import (DETECTION_SHAPES, compare_norms, format_rows,
                                           parse_shape)

TARGET = 1.5


def steady_mabn(c):
    norm = MABN(c)
    norm.num_batches_tracked.fill_(max(norm.renorm_hold_iters, norm.warmup_iters) + 1000)
    norm.chi2_history.fill_(1.0)
    return norm


def conv_bn(c):
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


def cenconv_mabn(c):
    return nn.Sequential(CenConv2d(c, c, 3, padding=1, bias=False), steady_mabn(c))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shapes', type=parse_shape, nargs='+',
                        default=list(DETECTION_SHAPES), help='N,C,H,W ...')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--iters', type=int, default=5)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    candidates = {'BN': nn.BatchNorm2d, 'MABN': steady_mabn,
                  'Conv2d+BN': conv_bn, 'CenConv2d+MABN': cenconv_mabn}
    rows = compare_norms(candidates, args.shapes, baseline='BN', warmup=args.warmup,
                         iters=args.iters)
    print(format_rows(rows))
    by_key = {(r['shape'], r['name']): r for r in rows}
    print('\nCenConv2d+MABN vs Conv2d+BN (time, memory):')
    for shape in args.shapes:
        new, old = by_key[shape, 'CenConv2d+MABN'], by_key[shape, 'Conv2d+BN']
        mem = (new['saved_mb'] + new['state_mb']) / max(old['saved_mb'] + old['state_mb'], 1e-9)
        print(f'  {str(shape):<22}{new["ms"] / old["ms"]:>6.2f}x time {mem:>6.2f}x mem')
    worst = max(r['time_ratio'] for r in rows if r['name'] == 'MABN')
    print(f'\nworst MABN time ratio vs BN: {worst:.2f}x (target <= {TARGET}x): '
          f'{"met" if worst <= TARGET else "NOT met"}')


if __name__ == '__main__':
    main()
