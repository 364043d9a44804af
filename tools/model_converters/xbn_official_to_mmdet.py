"""Convert an official XBNBlock ImageNet checkpoint (huangleiBuaa/XBNBlock) to XBNResNet keys.

A thin CLI over :func:`mmnorm_plugin.model_converters.xbn.convert_official_xbn`: renames the
batch-free norms (``bn*`` without running statistics -> ``gn*``), strips ``module.``, drops the
classifier, then builds the backbone the checkpoint describes and prints which keys load.

    python tools/model_converters/xbn_official_to_mmdet.py \
        ResNet-50-XBNBlock-standard.pth checkpoints/xbn/resnet50_xbn-p2_in1k-standard.pth

Official files may pickle non-tensor objects (e.g. the argparse config); torch >= 2.6 refuses
them by default. Pass ``--trust-pickle`` only for files from a source you trust.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from mmnorm_plugin.model_converters.xbn import (checkpoint_key_report,  # noqa: E402
                                          convert_official_xbn, format_key_report,
                                          infer_backbone_cfg)
from mmnorm_plugin.checkpoint.loading import load_foreign_checkpoint  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output .pth (saved as {"state_dict": ..., "meta": ...})')
    parser.add_argument('--bfn-position', choices=('P1', 'P2', 'P3'), default=None,
                        help='fail unless the checkpoint has its BFN here (default: detect)')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='torch.load(weights_only=False): runs pickled code, trusted files only')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = load_foreign_checkpoint(args.src, args.trust_pickle)
    state_dict, info = convert_official_xbn(checkpoint, bfn_position=args.bfn_position)
    backbone = infer_backbone_cfg(state_dict, info)
    print(f"detected {backbone}; renamed {len(info['renamed'])} BFN tensors, "
          f"dropped {info['dropped']}")

    import mmnorm_plugin  # noqa: F401  (registers the backbones)
    from mmdet.registry import MODELS
    print(format_key_report(checkpoint_key_report(MODELS.build(backbone), state_dict)))

    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    meta = dict(source=str(args.src), converter='xbn_official_to_mmdet',
                bfn_position=info['bfn_position'], stem_bfn=info['stem_bfn'],
                backbone=str(backbone))
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'saved {len(state_dict)} tensors to {args.dst}')
    return state_dict, backbone


if __name__ == '__main__':
    main()
