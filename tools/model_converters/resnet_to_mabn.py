"""Convert a BatchNorm ResNet checkpoint for a CenConv2d + MABN ResNet (MABN fine-tune configs).

A thin CLI over :func:`mmnorm_plugin.converters.mabn.convert_resnet_to_mabn` (see its docstring
for what is done to the weights and BN statistics, and the caveat: the published MABN fine-tune
started from an ImageNet model *trained* with weight centralization + MABN).

    python tools/model_converters/resnet_to_mabn.py torchvision://resnet50 \
        checkpoints/resnet50_tv-mabn-wc.pth
    python tools/model_converters/resnet_to_mabn.py my_detector.pth backbone.pth --mean fold

SRC is anything mmengine's CheckpointLoader reads (local path, http(s)://, torchvision://...).
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.runner import CheckpointLoader

from mmnorm_plugin.converters.mabn import convert_resnet_to_mabn


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='BN ResNet checkpoint (path or URL, e.g. torchvision://resnet50)')
    parser.add_argument('dst', help='output .pth (saved as {"state_dict": ..., "meta": ...})')
    parser.add_argument('--no-centralize', action='store_true',
                        help='keep the conv weights as they are')
    parser.add_argument('--mean', choices=['drop', 'fold'], default='drop',
                        help="BN running_mean: drop it (default) or fold it into the bias")
    parser.add_argument('--eps', type=float, default=1e-5, help="the BN layers' eps")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
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
