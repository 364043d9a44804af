"""Convert an official MABN checkpoint (megvii-model/MABN) to mmdet ResNet + MABN keys.

A thin CLI over :func:`mmnorm_plugin.model_converters.mabn.convert_official_mabn` (see its docstring
for the key mapping and the buffer semantics). The detection code's layout
(``module.backbone.body.stem.conv1.weight``, ``...layer1.0.bn1.buffer_x2``) gives a caffe-style
(stride in the 1x1) backbone for ``configs/mabn/*r50-caffe*``; the ImageNet code's layout
(torchvision names) a pytorch-style one.

    python tools/model_converters/mabn_official_to_mmdet.py R50-wc.pth \
        checkpoints/mabn/resnet50-caffe_mabn-wc_official.pth
    python tools/model_converters/mabn_official_to_mmdet.py R50-wc.pth \
        checkpoints/mabn/resnet50-caffe_mabn-wc_official-restart.pth --restart

``--restart`` starts MABN's counter and window over (required for the 8xb1 configs, whose
window is 32 iterations instead of the checkpoint's 16). Official files may pickle non-tensor
objects; torch >= 2.6 refuses them by default. Pass ``--trust-pickle`` only for files from a
source you trust.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from mmnorm_plugin.model_converters.mabn import convert_official_mabn  # noqa: E402
from mmnorm_plugin.checkpoint.loading import load_foreign_checkpoint  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output .pth (saved as {"state_dict": ..., "meta": ...})')
    parser.add_argument('--restart', action='store_true',
                        help="drop MABN's iteration counter and ring buffers (warm-up restarts)")
    parser.add_argument('--trust-pickle', action='store_true',
                        help='torch.load(weights_only=False): runs pickled code, trusted files only')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = load_foreign_checkpoint(args.src, args.trust_pickle)
    state_dict, report = convert_official_mabn(checkpoint, restart=args.restart)
    print(f"{report['layout']} layout -> style='{report['style']}' ResNet; "
          f"MABN state {'restarted' if report['restarted'] else 'kept'}; "
          f"dropped {len(report['dropped'])} non-backbone tensors")
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    meta = dict(source=str(args.src), converter='mabn_official_to_mmdet',
                layout=report['layout'], style=report['style'], restarted=report['restarted'])
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'saved {len(state_dict)} tensors to {args.dst}')
    return state_dict, report


if __name__ == '__main__':
    main()
