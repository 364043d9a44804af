"""A/B normalization layers on any mmdet config: paired seeds, 95 % intervals, table + JSON + PNG.

    python tools/analysis/norm_sweep.py CONFIG --norms BN GN CBN --batch 1 2 --seeds 0 1 2 3 4 \
        [--parts backbone neck heads] [--also BN@8] [--baseline BN] [--reference BN@8] \
        [--groups 8] [--norm NAME='{"norm_cfg": {...}}'] [--jobs 2] [--nice 10] \
        [--cfg-options k=v ...] --out work_dirs/norm_sweep/NAME

Every arm-seed runs tools/train.py then tools/test.py as separate processes; finished arm-seeds
(records under OUT/records, and those of the --report JSON, e.g. committed under docs/) are
skipped, so rerunning the same command resumes a killed sweep, on this machine or a fresh one.
`--report-only` (re)writes OUT/sweep.{md,json,png} from the records, `--from-json FILE` from a
report JSON (e.g. one committed under docs/). A study of one option compares each variant with
the norm it varies (`--versus CBNbatch=CBN`) and may pair with rows of another sweep
(`--with docs/norm_sweep_photo-digits_scratch.json BGN@1`). See mmnorm_plugin.analysis.norm_sweep.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402

from mmnorm_plugin.analysis.norm_sweep import (PARTS, Arm, import_records,  # noqa: E402
                                               load_records, merge_records, parse_norm,
                                               parse_versus, run_sweep, write_report)
from mmnorm_plugin.analysis.norm_sweep.records import arm_key  # noqa: E402
from mmnorm_plugin.analysis.norm_sweep.control import (control_sentence,  # noqa: E402
                                                       format_control, plateau, plot_curves,
                                                       positive_control)
from mmnorm_plugin.analysis.norm_sweep.cost import write_costs  # noqa: E402


def update_readme(path: str, section: str, text: str) -> None:
    """Replace what stands between ``<!-- norm_sweep:SECTION -->`` and
    ``<!-- /norm_sweep:SECTION -->`` in ``path`` (a README or a docs page) by ``text``; the
    markers must exist, once each."""
    begin, end = f'<!-- norm_sweep:{section} -->', f'<!-- /norm_sweep:{section} -->'
    with open(path) as f:
        content = f.read()
    if content.count(begin) != 1 or content.count(end) != 1 or \
            content.index(begin) > content.index(end):
        raise ValueError(f'{path} needs exactly one {begin} ... {end} block')
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    with open(path, 'w') as f:
        f.write(f'{head}{begin}\n{text.strip()}\n{end}{tail}')


def write_control(records, prefix: str, reference: str, title: str = '', metric: str = '') -> str:
    """``<prefix>_control.md`` (plateau of the large-batch BN and GN arms, and the positive
    control at every smaller batch recorded) and ``<prefix>_curves.png``; the control's
    sentence is appended to the report table ``<prefix>.md``; returns the text."""
    large = arm_key(reference)[1]
    kwargs = dict(metric=metric) if metric else {}
    refs = [f'BN@{large}', f'GN@{large}']
    batches = sorted({arm_key(r['arm'])[1] for r in records} - {large})
    control = positive_control(records, small=batches, large=large, **kwargs)
    plateau_ = plateau(records, refs, **kwargs)
    text = format_control(control, plateau_, title)
    with open(prefix + '_control.md', 'w') as f:
        f.write(text + '\n')
    # the protocol: a table drawn from a proxy states the proxy's control beside it
    with open(prefix + '.md', 'a') as f:
        f.write('\n' + control_sentence(control, plateau_) + '\n')
    arms = refs + [f'{n}@{b}' for b in batches for n in ('BN', 'GN')]
    plot_curves(records, arms, prefix + '_curves.png', title, **kwargs)
    return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='any mmdet config (not needed with '
                        '--from-json)')
    parser.add_argument('--out', help='sweep directory (records/, runs/, sweep.*)')
    parser.add_argument('--norms', nargs='+', default=['BN', 'GN', 'CBN'],
                        help='presets (BN SyncBN GN CBN MABN BGN BKN XBN FrozenBN) or names '
                        'given with --norm')
    parser.add_argument('--norm', action='append', default=[], metavar="NAME='{json}'",
                        help='define an arm: a JSON object with norm_cfg, conv_cfg, backbone '
                        "('XBN'), frozen_backbone, parts")
    parser.add_argument('--batch', nargs='+', type=int, default=[1, 2],
                        help='images per batch (the LR is scaled linearly)')
    parser.add_argument('--also', nargs='*', default=[], metavar='NORM@BATCH',
                        help='extra arms outside the grid, e.g. a large-batch reference BN@8')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--parts', nargs='+', default=list(PARTS), choices=PARTS,
                        help='where the norm goes')
    parser.add_argument('--groups', type=int, default=None,
                        help='group count of GN/BGN/XBN arms (default: the methods\' 32)')
    parser.add_argument('--baseline', default='BN', help='norm compared at the same batch')
    parser.add_argument('--reference', default=None, help='arm every arm is compared with, '
                        'e.g. BN@8')
    parser.add_argument('--versus', nargs='+', default=[], metavar='VARIANT=NORM',
                        help='compare VARIANT with NORM (at the same images per batch) instead '
                        'of --baseline, e.g. CBNbatch=CBN: a study of one option')
    parser.add_argument('--with', dest='with_records', nargs='+', action='append', default=[],
                        metavar='ITEM',
                        help='SOURCE [ARM ...]: add records of another sweep directory or '
                        'report JSON to the report (only ARMs, e.g. BN@1 BGN@1, if given); '
                        'repeatable')
    parser.add_argument('--jobs', type=int, default=1, help='arm-seeds run at once')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads per job (default: CPUs / jobs)')
    parser.add_argument('--nice', type=int, default=0, help='niceness of the runs')
    parser.add_argument('--keep-checkpoints', action='store_true')
    parser.add_argument('--val-interval', type=int, default=None, metavar='N',
                        help='evaluate every N epochs during training and record the learning '
                        'curve (default: only the final checkpoint, by tools/test.py)')
    parser.add_argument('--title', default='')
    parser.add_argument('--metric', default='coco/bbox_mAP')
    parser.add_argument('--report-only', action='store_true',
                        help='only write the report from the records in --out')
    parser.add_argument('--from-json', help='write the report from this report JSON')
    parser.add_argument('--report', help='report path prefix (default: OUT/sweep)')
    parser.add_argument('--readme', nargs=2, metavar=('FILE', 'SECTION'),
                        help='also put the table between <!-- norm_sweep:SECTION --> and '
                        '<!-- /norm_sweep:SECTION --> in FILE (a README or docs page)')
    parser.add_argument('--control', action='store_true',
                        help='also write PREFIX_control.md and PREFIX_curves.png: the plateau '
                        'of BN and GN at the --reference batch and the positive control (BN '
                        'loses more than GN at every smaller batch recorded)')
    parser.add_argument('--cost', action='store_true',
                        help='also write PREFIX_cost.{json,md}: what each run cost, read from '
                        'the mmengine logs of its training sessions under OUT/runs (resumes '
                        'and pauses included); --jobs says how many ran at a time')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='applied to every arm before the norm swap (recorded)')
    args = parser.parse_args(argv)
    if not args.from_json and not args.out:
        parser.error('--out is required (or --from-json)')
    if args.cost and not args.out:
        parser.error('--cost reads the run logs under --out')
    if not (args.from_json or args.report_only) and not args.config:
        parser.error('a config is required to run arms')
    if args.config and not args.config.startswith('mmdet::') and not osp.isfile(args.config):
        parser.error(f'config {args.config} does not exist')
    return args


def build_arms(args):
    defined = {}
    for text in args.norm:
        name, spec = parse_norm(text)
        defined[name] = spec

    def spec_of(name):
        return defined[name] if name in defined else parse_norm(name, args.groups)[1]

    arms = [Arm(n, spec_of(n), b) for b in args.batch for n in args.norms]
    for item in args.also:
        norm, sep, batch = item.rpartition('@')
        if not sep or not batch.isdigit():
            raise SystemExit(f'--also {item!r}: write NORM@BATCH, e.g. BN@8')
        if all(a.name != item for a in arms):
            arms.append(Arm(norm, spec_of(norm), int(batch)))
    return arms


def main(argv=None):
    args = parse_args(argv)
    try:
        versus = parse_versus(args.versus)  # bad report options fail before any training
        for source, *_ in args.with_records:
            if not osp.exists(source):
                raise ValueError(f'--with {source}: no such sweep directory or report JSON')
        if args.from_json:
            records = load_records(args.from_json)
        else:
            report_json = (args.report or osp.join(args.out, 'sweep')) + '.json'
            if osp.isfile(report_json):  # committed records count as done on any machine
                added = import_records(load_records(report_json), args.out)
                if added:
                    print(f'norm_sweep: {added} records taken from {report_json}')
            if not args.report_only:
                arms = build_arms(args)
                run_sweep(args.config, arms, args.seeds, args.out, args.parts,
                          args.cfg_options, args.jobs, args.threads, args.nice,
                          args.keep_checkpoints, val_interval=args.val_interval)
            records = load_records(args.out)
        for source, *arms in args.with_records:
            records = merge_records(records, load_records(source), arms or None)
    except (ValueError, RuntimeError) as err:
        raise SystemExit(str(err)) from None
    prefix = args.report or osp.join(args.out or osp.dirname(args.from_json), 'sweep')
    report = write_report(records, prefix, args.baseline, args.reference, args.title,
                          args.metric, versus)
    if args.readme:
        update_readme(args.readme[0], args.readme[1], report['text'])
    print(report['text'])
    if args.control:
        if not args.reference:
            raise SystemExit('--control needs --reference (the large-batch BN arm, e.g. BN@8)')
        print('\n' + write_control(records, prefix, args.reference, args.title, args.metric))
    if args.cost:
        print('\n' + write_costs(args.out, records, prefix, args.title, args.jobs))
    print(f'\nwritten: {prefix}.md, {prefix}.json' + (
        f', {prefix}.png' if report['analysis']['rows'] else ''))


if __name__ == '__main__':
    main()
