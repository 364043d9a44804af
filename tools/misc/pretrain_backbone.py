"""Pretrain the tiny ResNet-18-w16 backbone for the norm study's fine-tune setting.

    python tools/misc/pretrain_backbone.py [--out checkpoints/r18-w16_photo-digit-crops.pth]

See mmnorm_plugin.analysis.pretrain (what the task is, why).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmnorm_plugin.analysis.pretrain import pretrain_backbone  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='checkpoints/r18-w16_photo-digit-crops.pth')
    parser.add_argument('--num-train', type=int, default=20000)
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    pretrain_backbone(args.out, num_train=args.num_train, epochs=args.epochs, seed=args.seed)


if __name__ == '__main__':
    main()
