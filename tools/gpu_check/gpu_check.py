#!/usr/bin/env python
"""GPU check of every norm: correctness on the device, autocast, host syncs, layer timings,
torch.compile, a whole ResNet-50 + FPN step; JSON summary and a table (docs/gpu_check.md).

Usage::

    python tools/gpu_check/gpu_check.py [--device auto|cuda|cpu] [--budget S] [--parts a,b]
        [--compile-backend inductor|aot_eager|...] [--out DIR]

Writes DIR/gpu_check.json (after every part) and DIR/gpu_check.txt; DIR is --out, else $OUT
when set, else work_dirs/gpu_check. Exit status 0 when no part failed, 1 otherwise, 2 when
the stack is missing or a part name is unknown. ``tools/gpu_check/run.sh`` (``make
gpu-check``) first installs the wheels of ``.whl/`` where mmengine/mmcv/mmdet are missing.
"""
import argparse
import os
import os.path as osp
import sys

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmcv_ext_stub import ensure_mmcv_ext  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default=os.environ.get('DEVICE') or 'auto',
                        help='auto (cuda when available), cuda, cuda:N or cpu; default $DEVICE')
    parser.add_argument('--budget', type=float, default=None,
                        help='seconds for all parts (default 240 on CUDA, 180 on the CPU); checked '
                        'between items, so a run can end some seconds later')
    parser.add_argument('--parts', default=None,
                        help='comma-separated subset of the parts, run in the order given '
                        '(default all; an unknown name lists the known ones)')
    parser.add_argument('--compile-backend', default=None,
                        help='torch.compile backend (default inductor on CUDA, aot_eager on '
                        'the CPU: Inductor needs minutes of C++ compiles on 2 cores)')
    parser.add_argument('--seed', type=int, default=None)
    parser.add_argument('--out', default=None)
    parser.add_argument('--threads', type=int, default=None,
                        help="torch CPU threads (default 1 with --device cpu, else torch's)")
    args = parser.parse_args(argv)

    mmcv_ops = ensure_mmcv_ext()  # before anything imports mmdet.models
    if mmcv_ops.startswith('missing'):
        print(f'[gpu-check] {mmcv_ops}: install the stack or carry .whl/ '
              '(make gpu-wheels; tools/gpu_check/run.sh installs it)', file=sys.stderr)
        return 2
    import torch
    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.threads or device == 'cpu':
        # tiny CPU ops: one thread is faster than two fighting over a loaded 2-core machine
        torch.set_num_threads(args.threads or 1)
    if device.startswith('cuda') and not torch.cuda.is_available():
        print('[gpu-check] --device cuda but torch sees no CUDA device', file=sys.stderr)
        return 2
    from mmnorm_plugin.gpu_check import KitConfig, check_parts, run_kit
    from mmnorm_plugin.gpu_check.kit import parse_parts
    cfg = KitConfig.for_device(device, budget_s=args.budget, parts=parse_parts(args.parts),
                               compile_backend=args.compile_backend, seed=args.seed)
    try:
        check_parts(cfg.parts)
    except ValueError as exc:
        print(f'[gpu-check] --parts: {exc}', file=sys.stderr)
        return 2
    out = args.out or os.environ.get('OUT') or osp.join(ROOT, 'work_dirs', 'gpu_check')
    print(f'[gpu-check] device {device}, budget {cfg.budget_s:.0f} s, mmcv._ext: {mmcv_ops}, '
          f'out {out}', flush=True)
    summary = run_kit(cfg, out, mmcv_ops=mmcv_ops, log=lambda m: print(m, flush=True))
    print('\n' + summary['table'])
    print(f'\n[gpu-check] summary: {osp.join(out, "gpu_check.json")} (ok={summary["ok"]})')
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
