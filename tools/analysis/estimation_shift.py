"""Per-layer BatchNorm estimation shift of a detector (arXiv 2203.10778), table + plot.

    python tools/analysis/estimation_shift.py CONFIG CHECKPOINT [--num-batches 50]
        [--split val] [--batch-size B] [--out-dir DIR] [--cfg-options k=v ...]

CHECKPOINT may be ``none`` to measure the weights the config's ``init_cfg`` loads (e.g. a
converted ImageNet backbone). Every BN runs in eval mode on the first N batches of the config's
``<split>_dataloader``; see :mod:`mmnorm_plugin.analysis.estimation_shift` for the definitions.
Writes ``estimation_shift.png`` and ``estimation_shift.json`` to ``--out-dir``.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import Config, DictAction  # noqa: E402

from mmnorm_plugin.analysis.estimation_shift import (format_shift_table,  # noqa: E402
                                                     measure_config, plot_shift)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint file, or 'none' for the config's init")
    parser.add_argument('--num-batches', type=int, default=50)
    parser.add_argument('--split', default='val', choices=('train', 'val', 'test'))
    parser.add_argument('--batch-size', type=int, default=None)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--out-dir', default='work_dirs/estimation_shift')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    checkpoint = None if args.checkpoint.lower() == 'none' else args.checkpoint
    records = measure_config(cfg, checkpoint, num_batches=args.num_batches, split=args.split,
                             batch_size=args.batch_size, device=args.device)
    print(format_shift_table(records))
    os.makedirs(args.out_dir, exist_ok=True)
    plot = plot_shift(records, osp.join(args.out_dir, 'estimation_shift.png'),
                      title=f'{osp.basename(args.config)}: BN estimation shift')
    with open(osp.join(args.out_dir, 'estimation_shift.json'), 'w') as f:
        json.dump([r.as_dict() for r in records], f, indent=1)
    print(f'plot: {plot}')
    return records


if __name__ == '__main__':
    main()
