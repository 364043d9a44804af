"""Accuracy vs. batch size of normalization layers (the papers' small-batch figure), on CPU.

    python tools/analysis/small_batch_study.py [--methods BN GN CBN ...] [--batch-sizes 1 2 4 32]
        [--seeds 0 1 2] [--epochs 4] [--base-lr 0.1] [--out-dir work_dirs/small_batch_study]
        [--norm NAME='{"norm_cfg": {"type": "CBN", "buffer_num": 7}}' ...]
    python tools/analysis/small_batch_study.py --from-json a.json b.json --out-dir DIR

Trains a small conv net on scikit-learn's digits at every batch size (LR scaled linearly,
same epochs), several seeds, and writes ``study.json`` (one record per run, with the commit and
this command line), ``study.md`` (mean ± std table) and ``study.png`` (accuracy vs. batch size,
log-x). ``--from-json`` merges saved records (e.g. from runs split over several processes; each
keeps the commit and command it was trained with) and re-draws table and plot.
See :mod:`mmnorm_plugin.analysis.small_batch_study` for the protocol.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmnorm_plugin  # noqa: E402,F401  (registers the norms)
from mmnorm_plugin.analysis.provenance import command_line  # noqa: E402
from mmnorm_plugin.analysis.small_batch_study import (  # noqa: E402
    METHODS, StudyRecord, format_paired_table, format_table, plot_study, run_study)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--methods', nargs='*', default=list(METHODS),
                        help=f'built-in arms: {", ".join(METHODS)}')
    parser.add_argument('--norm', nargs='+', default=[], metavar='NAME=JSON',
                        help='extra arms: a name and the SmallConvNet kwargs as JSON')
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 2, 4, 32])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--epochs', type=float, default=4)
    parser.add_argument('--base-lr', type=float, default=0.1,
                        help='peak LR at batch 32; scaled linearly with the batch size')
    parser.add_argument('--from-json', nargs='+', default=None,
                        help='merge saved study.json files instead of training')
    parser.add_argument('--out-dir', default='work_dirs/small_batch_study')
    parser.add_argument('--title', default='')
    parser.add_argument('--paired', metavar='METHOD', action='append', default=[],
                        help='also tabulate every method against METHOD at the same batch size '
                        '(paired by seed, 95 %% t interval); repeatable')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        records = []
        for path in args.from_json:
            with open(path) as f:
                records += [StudyRecord.from_dict(r) for r in json.load(f)]
    else:
        unknown = [m for m in args.methods if m not in METHODS]
        if unknown:
            raise SystemExit(f'unknown method(s) {unknown}; built-in: {list(METHODS)} '
                             '(or pass your own with --norm NAME=JSON)')
        methods = {m: METHODS[m] for m in args.methods}
        for spec in args.norm:
            cut = spec.find('={')  # names may contain '=' (e.g. 'CBN k=7'), JSON starts at '{'
            if cut < 1:
                raise SystemExit(f"--norm expects NAME={{...json...}}, got {spec!r}")
            methods[spec[:cut]] = json.loads(spec[cut + 1:])
        records = run_study(methods, args.batch_sizes, args.seeds, epochs=args.epochs,
                            base_lr=args.base_lr, command=command_line(__file__, argv))
    os.makedirs(args.out_dir, exist_ok=True)
    table = format_table(records)
    for baseline in args.paired:
        table += '\n\n' + format_paired_table(records, baseline)
    print(table)
    with open(osp.join(args.out_dir, 'study.json'), 'w') as f:
        json.dump([r.as_dict() for r in records], f, indent=1)
    with open(osp.join(args.out_dir, 'study.md'), 'w') as f:
        f.write(table + '\n')
    plot = plot_study(records, osp.join(args.out_dir, 'study.png'), title=args.title)
    print(f'wrote {plot}, study.json and study.md in {args.out_dir}')


if __name__ == '__main__':
    main()
