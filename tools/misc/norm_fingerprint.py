"""Fingerprint every norm's numerics, or compare two fingerprints bit for bit.

    python tools/misc/norm_fingerprint.py --out fp.json            # record
    python tools/misc/norm_fingerprint.py --compare before.json    # record now, compare

A refactor of the norms keeps every digest (outputs, gradients, state after each step of a
fixed sequence): see mmnorm_plugin.benchmarks.fingerprint. Compare runs made on one machine
with one torch build. Exit status 1 when a digest differs.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmnorm_plugin.benchmarks.fingerprint import (compare_fingerprints,  # noqa: E402
                                                  dump_fingerprint, norm_fingerprint)


def _commit() -> dict:
    def git(*args):
        return subprocess.run(['git', '-C', ROOT, *args], capture_output=True,
                              text=True).stdout.strip()
    return {'commit': git('rev-parse', 'HEAD') or None,
            'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', help='write the fingerprint (JSON) here')
    parser.add_argument('--compare', help='a fingerprint JSON to compare this checkout with')
    parser.add_argument('--only', nargs='+', help='scenario names (default: all)')
    args = parser.parse_args(argv)
    result = norm_fingerprint(args.only)
    result['meta'].update(_commit())
    if args.out:
        with open(args.out, 'w') as f:
            f.write(dump_fingerprint(result))
    print(f"{len(result['scenarios'])} scenarios, {result['meta']['digests']} digests "
          f"(torch {result['meta']['torch']}, commit {result['meta']['commit']})")
    if not args.compare:
        return 0
    with open(args.compare) as f:
        before = json.load(f)
    if args.only:
        before['scenarios'] = {k: v for k, v in before['scenarios'].items() if k in args.only}
    problems = compare_fingerprints(before, result)
    for line in problems[:50]:
        print(line)
    if problems:
        print(f'{len(problems)} digests differ from {args.compare}')
        return 1
    print(f"all {result['meta']['digests']} digests equal to {args.compare} "
          f"(recorded at {before['meta'].get('commit')})")
    return 0


if __name__ == '__main__':
    sys.exit(main())
