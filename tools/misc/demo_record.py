"""Record what `make demo` prints (docs/evidence/demo.json), or check the code still gives it.

    python tools/misc/demo_record.py            # train + test the demo config, write the record
    python tools/misc/demo_record.py --check    # only the short fingerprint run, compared

The record holds the demo's COCO metrics, the provenance of the code and the per-iteration
losses of a short run of the same config (the fingerprint); --check reruns that short run and
exits 1 when the losses differ (the demo would print another number: record it again).
See mmnorm_plugin.analysis.demo_record.
"""
import argparse
import json
import os.path as osp
import sys
import tempfile

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmnorm_plugin.analysis.demo_record import (compare_losses, fingerprint,  # noqa: E402
                                                record_demo, summary)

RECORD = osp.join(ROOT, 'docs', 'evidence', 'demo.json')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo_record'))
    parser.add_argument('--out', default=RECORD)
    args = parser.parse_args(argv)
    if args.check:
        with open(args.out) as f:
            record = json.load(f)
        with tempfile.TemporaryDirectory() as tmp:
            problem = compare_losses(record['fingerprint']['losses'],
                                     fingerprint(tmp, record['config']))
        print(problem and f'the demo config no longer computes what {args.out} recorded: '
              f'{problem} (python tools/misc/demo_record.py records it again)'
              or 'the demo config computes what its record says')
        return 1 if problem else 0
    print(summary(record_demo(args.work_dir, args.out)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
