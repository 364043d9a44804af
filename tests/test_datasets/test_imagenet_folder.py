"""The photo-digit crops in ImageNet's layout: files, labels, determinism, and mmpretrain's
ImageNet dataset reads them with the labels written."""
import glob
import os.path as osp

import pytest

from mmnorm_plugin.datasets.imagenet_folder import CROP_CLASSES, make_photo_digit_crops_imagenet


def _files(root):
    return {osp.relpath(p, root): open(p, 'rb').read()
            for p in sorted(glob.glob(osp.join(root, '**', '*.*'), recursive=True))}


def test_layout_labels_and_determinism(tmp_path):
    counts = make_photo_digit_crops_imagenet(str(tmp_path / 'a'), num_train=6, num_val=4)
    assert counts == dict(train=6, val=4)
    for split, num in counts.items():
        lines = (tmp_path / 'a' / 'meta' / f'{split}.txt').read_text().splitlines()
        assert len(lines) == num
        for line in lines:
            name, label = line.split()
            # the class folder is the label's class, and the image is there
            assert name.split('/')[0] == CROP_CLASSES[int(label)]
            assert (tmp_path / 'a' / split / name).is_file()
    make_photo_digit_crops_imagenet(str(tmp_path / 'b'), num_train=6, num_val=4)
    assert _files(tmp_path / 'a') == _files(tmp_path / 'b')
    with pytest.raises(ValueError, match='num_train and num_val must be >= 1'):
        make_photo_digit_crops_imagenet(str(tmp_path / 'c'), num_train=0)


def test_mmpretrain_imagenet_reads_it(tmp_path, mmpretrain):
    from mmpretrain.datasets import ImageNet
    make_photo_digit_crops_imagenet(str(tmp_path), num_train=5, num_val=2, size=24)
    dataset = ImageNet(data_root=str(tmp_path), split='train',
                       pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
    assert len(dataset) == 5 and len(dataset.metainfo['classes']) == 1000
    lines = (tmp_path / 'meta' / 'train.txt').read_text().splitlines()
    for i, line in enumerate(lines):
        sample = dataset[i]
        assert int(sample['data_samples'].gt_label) == int(line.split()[1])
        assert tuple(sample['inputs'].shape) == (3, 24, 24)
