"""Training-step time of every norm, eager against torch.compile(fullgraph=True), in one run.

A thin CLI over :func:`mmnorm_plugin.benchmarks.layer_benchmark.compare_compiled`: a three-stage CNN
(conv-norm-ReLU, the convs tapped, one eager step first) per norm, its compiled copy, and
interleaved timed training steps (forward, backward, SGD step). Prints medians and the
eager/compiled ratio (> 1: compiled is faster) and the first compiled step's time (tracing and
code generation). CPU by default; run with OMP_NUM_THREADS=1 on a shared machine.

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_compile.py
    OMP_NUM_THREADS=1 python tools/benchmarks/bench_compile.py --norms CBN BKN --shape 2,3,64,64
"""
import argparse

from torch import nn

from mmnorm_plugin.models.layers.cen_conv import CenConv2d
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import BKN
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.mabn import MABN
from mmnorm_plugin.benchmarks.layer_benchmark import compare_compiled, format_compiled_rows, parse_shape

# Each in its steady state from the first timed step: CBN's window on, MABN past warm-up and
# renorm hold (the conv it is meant for: weight-centralized).
NORMS = {
    'BN': (nn.BatchNorm2d, nn.Conv2d),
    'CBN': (lambda c: CBN(c, buffer_num=3), nn.Conv2d),
    'MABN': (lambda c: MABN(c, buffer_size=4, warmup_iters=0, renorm_hold_iters=0), CenConv2d),
    'BGN': (lambda c: BGN(c, num_groups=8), nn.Conv2d),
    'BKN': (BKN, nn.Conv2d),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--norms', nargs='+', choices=sorted(NORMS), default=list(NORMS))
    parser.add_argument('--shape', type=parse_shape, default=(8, 3, 32, 32),
                        help='input N,C,H,W (default 8,3,32,32)')
    parser.add_argument('--width', type=int, default=32, help='channels of every stage')
    parser.add_argument('--backend', default='inductor')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=15)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = compare_compiled({name: NORMS[name] for name in args.norms}, shape=args.shape,
                            width=args.width, warmup=args.warmup, iters=args.iters,
                            backend=args.backend)
    print(format_compiled_rows(rows))


if __name__ == '__main__':
    main()
