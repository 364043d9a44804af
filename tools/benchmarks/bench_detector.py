"""Training-iteration and inference time of each norm's detector against its BN twin and
frozen BN, interleaved in one run (see mmnorm_plugin/utils/detector_benchmark.py).

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_detector.py [--iters 5] [--size 160 160]
    python tools/benchmarks/bench_detector.py --device cuda --size 800 1333   # on a GPU
"""
import argparse

import torch

from mmnorm_plugin.benchmarks.detector_benchmark import (METHODS, compare_detectors,
                                                    format_detector_rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--size', nargs=2, type=int, default=(160, 160), metavar=('H', 'W'),
                        help='image size; 800 1333 is the COCO setting (GPU)')
    parser.add_argument('--batch', type=int, default=2, help='images per iteration')
    parser.add_argument('--iters', type=int, default=5, help='timed rounds (median)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed rounds first')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--modes', nargs='+', default=['train', 'infer'],
                        choices=['train', 'infer'])
    args = parser.parse_args()
    rows = compare_detectors(args.methods, tuple(args.size), args.batch, args.iters,
                             args.warmup, args.device, args.modes)
    print(format_detector_rows(rows, f'Faster R-CNN R18-w16 FPN, {args.batch}x3x{args.size[0]}'
                                     f'x{args.size[1]}, {args.device}, torch threads '
                                     f'{torch.get_num_threads()}, medians of {args.iters}'))


if __name__ == '__main__':
    main()
