"""Convert a plugin detector (CBN/MABN/BGN/BKN norms, CenConv2d) into a plain mmdet one.

Writes a config and a checkpoint that mmdet loads without importing mmnorm_plugin; every norm
is the BN computing its eval function, every CenConv2d a Conv2d with centred weights. Fold the
BNs into the convs after loading with ``mmcv.cnn.fuse_conv_bn`` (see docs/deployment.md):

    python tools/deploy/convert_norms.py CONFIG CHECKPOINT OUT_DIR
    python tools/deploy/convert_norms.py CONFIG CHECKPOINT OUT_DIR --onnx [--onnx-shape 800 1344]

CHECKPOINT is loaded through the verified, weights-only loader (docs/checkpoint_safety.md).

``--onnx`` also writes <name>_deploy_backbone_neck.onnx: the converted backbone + neck with the
BNs folded, for one image of the given height and width (needs ``pip install -e .[deploy]``; see
mmnorm_plugin/deploy/onnx.py).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402

import mmnorm_plugin  # noqa: F401,E402  (registers the layers the source config uses)
from mmnorm_plugin.checkpoint.loading import (RefusedCheckpoint,  # noqa: E402
                                              trusted_checkpoints)
from mmnorm_plugin.checkpoint.safety import DamagedCheckpoint  # noqa: E402
from mmnorm_plugin.deploy import convert_detector, export_backbone_neck  # noqa: E402
from mmnorm_plugin.deploy.onnx import check_export_deps  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out_dir', help='writes <name>_deploy.py and <name>_deploy.pth here')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--onnx', action='store_true',
                        help='also export the converted backbone + neck to ONNX')
    parser.add_argument('--onnx-shape', nargs=2, type=int, default=[800, 1344],
                        metavar=('H', 'W'), help='input image size of the ONNX graph (padded)')
    parser.add_argument('--unsafe-load', metavar='PATH', action='append', default=[],
                        help='load this file with the full pickle machinery (runs code stored '
                        'in it: trusted files only)')
    args = parser.parse_args(argv)
    if args.onnx:
        try:  # before the conversion, which takes a while
            check_export_deps()
        except ImportError as err:
            raise SystemExit(str(err))
    os.makedirs(args.out_dir, exist_ok=True)
    name = osp.splitext(osp.basename(args.config))[0] + '_deploy'
    try:  # CHECKPOINT loads verified and weights-only; a refusal or damage is one line
        with trusted_checkpoints(args.unsafe_load):
            out = convert_detector(args.config, args.checkpoint,
                                   osp.join(args.out_dir, name + '.py'),
                                   osp.join(args.out_dir, name + '.pth'), device=args.device,
                                   cfg_options=args.cfg_options)
    except (DamagedCheckpoint, RefusedCheckpoint) as err:
        raise SystemExit(str(err)) from None
    print(f'converted modules: {out["converted"]}; needs mmnorm_plugin: {out["needs_plugin"]}')
    if args.onnx:
        path = export_backbone_neck(out['model'],
                                    osp.join(args.out_dir, name + '_backbone_neck.onnx'),
                                    (1, 3, *args.onnx_shape))
        print(f'ONNX (backbone + neck, BN folded, input 1x3x{args.onnx_shape[0]}x'
              f'{args.onnx_shape[1]}): {path}')


if __name__ == '__main__':
    main()
