"""Table and bar chart of the small-batch detection study (configs/small_batch).

    python tools/analysis/detection_study.py BN-8=work_dirs/sb/bn8 BN-1=work_dirs/sb/bn1 ...
        [--reference BN-8 BN-1] [--out docs/small_batch_detection.png] [--json results.json]
    python tools/analysis/detection_study.py --from-json docs/small_batch_detection.json \
        --out docs/small_batch_detection.png     # re-draw from saved results, no work dirs

Each ``NAME=WORK_DIR`` is one arm run by ``CONFIG=... WORK_DIR=... bash tools/run_demo.sh``;
see :mod:`mmnorm_plugin.analysis.detection_study`. Prints a markdown table; the ``--json`` rows
of arms read from work dirs carry the commit and this command line, rows from ``--from-json``
keep theirs.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmnorm_plugin.analysis.detection_study import (format_table, parse_arms,  # noqa: E402
                                                    plot_study)
from mmnorm_plugin.analysis.provenance import command_line  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('arms', nargs='*', help='NAME=WORK_DIR, in plotting order')
    parser.add_argument('--from-json', default=None,
                        help='arms saved by --json before, instead of work directories')
    parser.add_argument('--reference', nargs='*', default=['BN-8', 'BN-1'],
                        help='arms drawn as dashed lines across the chart')
    parser.add_argument('--out', default='work_dirs/small_batch_detection.png')
    parser.add_argument('--title', default='')
    parser.add_argument('--json', default=None, help='also write the table as JSON here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if bool(args.arms) == bool(args.from_json):
        raise SystemExit('give NAME=WORK_DIR arms or --from-json FILE (one of the two)')
    if args.from_json:
        with open(args.from_json) as f:
            arms = json.load(f)
    else:
        arms = parse_arms(args.arms, command=command_line(__file__, argv))
    references = [r for r in args.reference if r in {a['name'] for a in arms}]
    print(format_table(arms))
    print(f'plot: {plot_study(arms, args.out, args.title, references)}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(arms, f, indent=1)


if __name__ == '__main__':
    main()
