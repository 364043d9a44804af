"""Strip training-only state from a checkpoint for release / evaluation (the resume file stays).

A thin CLI over :func:`mmnorm_plugin.converters.release.strip_checkpoint_file` (its module
docstring lists what is removed and why evaluation does not need it): CBN windows and
counters, MABN rings, optimizer, schedulers, message hub, EMA copy.

    python tools/model_converters/strip_training_state.py work_dirs/x/iter_1500.pth \
        work_dirs/x/iter_1500_release.pth

SRC is loaded through the verified, weights-only loader (docs/checkpoint_safety.md); DST
records its own checksum.

The output evaluates to the same result with tools/test.py under the same config, and a CBN
checkpoint also under its BN twin config (same keys for everything eval uses).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmnorm_plugin.checkpoint.loading import (RefusedCheckpoint,  # noqa: E402
                                              trusted_checkpoints)
from mmnorm_plugin.checkpoint.safety import DamagedCheckpoint  # noqa: E402
from mmnorm_plugin.converters.release import strip_checkpoint_file  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='Runner checkpoint (.pth), e.g. work_dirs/<cfg>/iter_N.pth')
    parser.add_argument('dst', help='output .pth (must differ from src)')
    parser.add_argument('--unsafe-load', metavar='PATH', action='append', default=[],
                        help='load this file with the full pickle machinery (runs code stored '
                        'in it: trusted files only)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    try:  # src is loaded verified and weights-only; a refusal or damage is one line
        with trusted_checkpoints(args.unsafe_load):
            sizes = strip_checkpoint_file(args.src, args.dst)
    except (DamagedCheckpoint, RefusedCheckpoint) as err:
        raise SystemExit(str(err)) from None
    mb = 1024 ** 2
    before, after = sizes.pop('file bytes before'), sizes.pop('file bytes after')
    print(f'{args.src}: {before / mb:.1f} MB -> {args.dst}: {after / mb:.1f} MB')
    for what, nbytes in sizes.items():
        if nbytes:
            print(f'  removed {what}: {nbytes / mb:.1f} MB')


if __name__ == '__main__':
    main()
