"""Generate the embedded tiny COCO-format dataset (see mmnorm_plugin.datasets.tiny_coco)."""
import argparse

from mmnorm_plugin.datasets.tiny_coco import VARIANTS, make_tiny_coco


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out-dir', default='data/tiny_coco')
    parser.add_argument('--num-train', type=int, default=240)
    parser.add_argument('--num-val', type=int, default=60)
    parser.add_argument('--image-size', type=int, default=None,
                        help="default: the variant's (160 'default', 96 'hard')")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--variant', choices=sorted(VARIANTS), default='default',
        help="'hard': per-image photometric and scale variation, more and smaller objects; "
        'the set on which BN at 1 image per batch loses to BN at 8 (configs/small_batch)')
    return parser.parse_args()


def main():
    args = parse_args()
    paths = make_tiny_coco(args.out_dir, args.num_train, args.num_val, args.image_size,
                           seed=args.seed, variant=args.variant)
    print(f'tiny COCO ({args.variant}) written: {paths["train"]} ({args.num_train} images), '
          f'{paths["val"]} ({args.num_val} images)')


if __name__ == '__main__':
    main()
