"""Per-layer cost of the synced norms in a process group: time against BN and against their
per-GPU form, and the bytes each layer communicates per iteration (against nn.SyncBatchNorm on
CUDA, which refuses CPU tensors).

Starts ``--nproc`` processes (gloo on CPU, nccl with ``--device cuda``: one GPU each), times
every norm's fwd+bwd on a conv output with :func:`mmnorm_plugin.benchmarks.layer_benchmark.compare_norms`
(interleaved medians, the same calls on every rank so the collectives pair up) and counts the
payload of its collectives with :func:`~mmnorm_plugin.benchmarks.layer_benchmark.collective_bytes`.
Rank 0 prints. On a CPU machine the ranks share the cores and gloo goes through loopback TCP,
so the time ratios are upper bounds of what a GPU cluster sees.

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_sync_norms.py --nproc 2
    python tools/benchmarks/bench_sync_norms.py --nproc 8 --device cuda
"""
import argparse
import functools
import os
import os.path as osp
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmnorm_plugin.norms.bgn import BGN, SyncBGN  # noqa: E402
from mmnorm_plugin.norms.bkn import BKN, SyncBKN  # noqa: E402
from mmnorm_plugin.norms.cbn import CBN, SyncCBN  # noqa: E402
from mmnorm_plugin.benchmarks.layer_benchmark import (collective_bytes, compare_norms,  # noqa: E402
                                           format_rows, parse_shape)

#: FPN level P3 of two 800x1216 images per GPU, and a 4conv1fc box head on 512 RoIs per GPU
SHAPES = ((2, 256, 100, 152), (512, 256, 7, 7))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nproc', type=int, default=2, help='processes (GPUs with cuda)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--shapes', type=parse_shape, nargs='+', default=list(SHAPES),
                        help='per-GPU N,C,H,W ...')
    parser.add_argument('--warmup', type=int, default=4)
    parser.add_argument('--iters', type=int, default=7)
    return parser.parse_args(argv)


def candidates(device: str) -> dict:
    norms = {'BN': nn.BatchNorm2d}
    if device == 'cuda':
        norms['SyncBN'] = nn.SyncBatchNorm
    norms.update({'CBN': CBN, 'SyncCBN': SyncCBN,
                  'BGN': functools.partial(BGN, num_groups=32),
                  'SyncBGN': functools.partial(SyncBGN, num_groups=32),
                  'BKN': BKN, 'SyncBKN': SyncBKN})
    return norms


def run_rank(rank: int, args, port: int) -> None:
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    device = 'cpu'
    if args.device == 'cuda':
        torch.cuda.set_device(rank)
        device = f'cuda:{rank}'
    dist.init_process_group('nccl' if args.device == 'cuda' else 'gloo',
                            init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=args.nproc)
    try:
        norms = candidates(args.device)
        rows = compare_norms(norms, args.shapes, baseline='BN', warmup=args.warmup,
                             iters=args.iters, device=device)
        payload = {name: collective_bytes(make, args.shapes[0], device=device)
                   for name, make in norms.items()}
        if rank == 0:
            print(f'{args.nproc} processes, {args.device}, per-GPU shapes {args.shapes}')
            print(format_rows(rows))
            print(f'\n{"shape (N,C,H,W)":<22}{"norm":<10}{"x per-GPU form":>18}'
                  f'{"bytes fwd":>12}{"bytes bwd":>12}')
            for shape in args.shapes:
                ms = {r['name']: r['ms'] for r in rows if r['shape'] == shape}
                for name in [n for n in norms if n.startswith('Sync')]:
                    base = name[4:] if name[4:] in ms else 'BN'
                    fwd, bwd = payload[name] if shape == args.shapes[0] else ('', '')
                    ratio = f'{ms[name] / ms[base]:.2f} ({base})'
                    print(f'{str(shape):<22}{name:<10}{ratio:>18}{fwd:>12}{bwd:>12}')
    finally:
        dist.destroy_process_group()


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and torch.cuda.device_count() < args.nproc:
        raise SystemExit(f'--nproc {args.nproc} needs as many GPUs '
                         f'({torch.cuda.device_count()} visible)')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(run_rank, args=(args, port), nprocs=args.nproc)


if __name__ == '__main__':
    main()
