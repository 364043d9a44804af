"""Convert a BatchNorm ResNet checkpoint for a CenConv2d + MABN ResNet (MABN fine-tune configs).

A thin CLI over :func:`mmnorm_plugin.converters.mabn.convert_resnet_to_mabn` (see its docstring
for what is done to the weights and BN statistics, and the caveat: the published MABN fine-tune
started from an ImageNet model *trained* with weight centralization + MABN).

    python tools/model_converters/resnet_to_mabn.py torchvision://resnet50 \
        checkpoints/resnet50_tv-mabn-wc.pth
    python tools/model_converters/resnet_to_mabn.py my_detector.pth backbone.pth --mean fold

SRC is a local path or an http(s)://, torchvision:// or open-mmlab:// name, loaded through the
verified, weights-only loader (docs/checkpoint_safety.md).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.runner import CheckpointLoader  # noqa: E402

from mmnorm_plugin.checkpoint.loading import (RefusedCheckpoint,  # noqa: E402
                                              trusted_checkpoints)
from mmnorm_plugin.checkpoint.safety import DamagedCheckpoint  # noqa: E402
from mmnorm_plugin.converters.mabn import convert_resnet_to_mabn  # noqa: E402
from mmnorm_plugin.engine.guarded_loading import guarded  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='BN ResNet checkpoint (path or URL, e.g. torchvision://resnet50)')
    parser.add_argument('dst', help='output .pth (saved as {"state_dict": ..., "meta": ...})')
    parser.add_argument('--no-centralize', action='store_true',
                        help='keep the conv weights as they are')
    parser.add_argument('--mean', choices=['drop', 'fold'], default='drop',
                        help="BN running_mean: drop it (default) or fold it into the bias")
    parser.add_argument('--eps', type=float, default=1e-5, help="the BN layers' eps")
    parser.add_argument('--unsafe-load', metavar='PATH', action='append', default=[],
                        help='load this file with the full pickle machinery (runs code stored '
                        'in it: trusted files only)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:  # verified, weights-only (URLs too: mmengine would unpickle them fully)
        with trusted_checkpoints(args.unsafe_load):
            checkpoint = CheckpointLoader.load_checkpoint(guarded(args.src), map_location='cpu')
    except (DamagedCheckpoint, RefusedCheckpoint) as err:
        raise SystemExit(str(err)) from None
    state_dict = convert_resnet_to_mabn(checkpoint, centralize=not args.no_centralize,
                                        mean=args.mean, eps=args.eps)
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    meta = dict(source=str(args.src), converter='resnet_to_mabn',
                centralize=not args.no_centralize, mean=args.mean)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'saved {len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
