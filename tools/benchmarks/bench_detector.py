"""Training-iteration and inference time of each norm's detector against its BN twin and
frozen BN, interleaved in one run (see mmnorm_plugin/benchmarks/detector_benchmark.py).
With ``--compile``: each detector's training iteration eager against its backbone, FPN and box
head compiled with ``torch.compile(fullgraph=True)`` (Inductor).

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_detector.py [--iters 5] [--size 160 160]
    OMP_NUM_THREADS=1 python tools/benchmarks/bench_detector.py --compile --methods cbn bkn
    python tools/benchmarks/bench_detector.py --device cuda --size 800 1333   # on a GPU
"""
import argparse

import torch

from mmnorm_plugin.benchmarks.detector_benchmark import (
    METHODS, compare_compiled_detectors, compare_detectors, format_compiled_detector_rows,
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
    parser.add_argument('--compile', action='store_true',
                        help='eager vs torch.compile of the norm-bearing parts (training only)')
    parser.add_argument('--backend', default='inductor', help='torch.compile backend')
    args = parser.parse_args()
    title = (f'Faster R-CNN R18-w16 FPN, {args.batch}x3x{args.size[0]}x{args.size[1]}, '
             f'{args.device}, torch threads {torch.get_num_threads()}, medians of {args.iters}')
    if args.compile:
        rows = compare_compiled_detectors(args.methods, tuple(args.size), args.batch, args.iters,
                                          args.warmup, args.device, args.backend)
        print(format_compiled_detector_rows(rows, title + f', {args.backend}'))
        return
    rows = compare_detectors(args.methods, tuple(args.size), args.batch, args.iters,
                             args.warmup, args.device, args.modes)
    print(format_detector_rows(rows, title))


if __name__ == '__main__':
    main()
