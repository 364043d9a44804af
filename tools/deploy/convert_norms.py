"""Convert a plugin detector (CBN/MABN/BGN/BKN norms, CenConv2d) into a plain mmdet one.

Writes a config and a checkpoint that mmdet loads without importing mmnorm_plugin; every norm
is the BN computing its eval function, every CenConv2d a Conv2d with centred weights. Fold the
BNs into the convs after loading with ``mmcv.cnn.fuse_conv_bn`` (see README, Deployment):

    python tools/deploy/convert_norms.py CONFIG CHECKPOINT OUT_DIR
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction

import mmnorm_plugin  # noqa: F401  (registers the layers the source config uses)
from mmnorm_plugin.deploy import convert_detector


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out_dir', help='writes <name>_deploy.py and <name>_deploy.pth here')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    name = osp.splitext(osp.basename(args.config))[0] + '_deploy'
    out = convert_detector(args.config, args.checkpoint, osp.join(args.out_dir, name + '.py'),
                           osp.join(args.out_dir, name + '.pth'), device=args.device,
                           cfg_options=args.cfg_options)
    print(f'converted modules: {out["converted"]}; needs mmnorm_plugin: {out["needs_plugin"]}')


if __name__ == '__main__':
    main()
