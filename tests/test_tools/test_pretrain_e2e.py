"""The pretrain -> detect path end to end, with the commands the docs give a newcomer.

docs/beyond_detection.md's tested block (and README's copy of it) trains a BGN ResNet-50 on
ImageNet with our tools/train.py (mmpretrain's tool, chosen by the config's default_scope), then a
Faster R-CNN whose BGN backbone starts from that checkpoint. Here they run as written, in a
temporary directory holding tiny sets at the configs' own paths (data/imagenet: photo-digit
crops in ImageNet's layout; data/coco: photo digits in COCO 2017's layout), with tiny overrides
(32 px crops, one epoch, the checkpoint of that epoch). Also: tools/test.py evaluates the
classifier through mmpretrain's metric, and mmpretrain's own tools/train.py runs an XBN config
through custom_imports alone.
"""
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
import torch

from mmnorm_plugin.datasets import make_photo_digit_crops_imagenet, make_photo_digits

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOC = osp.join(ROOT, 'docs', 'beyond_detection.md')
TESTED = re.compile(r'<!-- tested: tests/test_tools/test_pretrain_e2e.py -->\s*```shell\n(.*?)```',
                    re.S)
CLASSIFIER_WORK_DIR = 'work_dirs/resnet50_bgn_8xb2-acc16_in1k'
# 32 px crops instead of 224, one epoch, no worker processes
CLASSIFIER_TINY = ['--no-persistent-workers', '--cfg-options',
                   'train_dataloader.dataset.pipeline.1.scale=32',
                   'val_dataloader.dataset.pipeline.1.scale=32',
                   'val_dataloader.dataset.pipeline.2.crop_size=32',
                   'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
                   'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1']
# 64 px images, one epoch, 64 RoIs per image, no validation and no checkpoint
DETECTOR_TINY = ['--cfg-options',
                 f'model.backbone.init_cfg.checkpoint={CLASSIFIER_WORK_DIR}/epoch_1.pth',
                 'train_dataloader.dataset.pipeline.2.scale=(64,64)',
                 'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
                 'train_dataloader.persistent_workers=False', 'model.train_cfg.rcnn.sampler.num=64',
                 'train_cfg.max_epochs=1', 'val_cfg=None', 'val_dataloader=None',
                 'val_evaluator=None', 'default_hooks.checkpoint.interval=2',
                 'default_hooks.checkpoint.save_last=False', 'default_hooks.logger.interval=1']
COCO_NAMES = ('person', 'bicycle', 'car', 'motorcycle')  # for the four digit classes

pytestmark = pytest.mark.slow


def _documented_commands(path):
    blocks = TESTED.findall(open(path).read())
    assert len(blocks) == 1, f'{path}: one tested shell block expected, found {len(blocks)}'
    return [line.split() for line in blocks[0].splitlines()
            if line.strip() and not line.lstrip().startswith('#')]


def _run(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _coco_2017_layout(tmp, root):
    """Photo digits where the COCO configs look: data/coco/{train2017,annotations}, with COCO
    category names (mmdet's CocoDataset keeps the categories named in its 80 classes)."""
    make_photo_digits(str(tmp / 'digits'), num_train=4, num_val=1)
    os.makedirs(root / 'annotations')
    shutil.move(str(tmp / 'digits' / 'train'), str(root / 'train2017'))
    ann = json.loads((tmp / 'digits' / 'annotations' / 'instances_train.json').read_text())
    for category in ann['categories']:
        category['name'] = COCO_NAMES[category['id'] - 1]
    (root / 'annotations' / 'instances_train2017.json').write_text(json.dumps(ann))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, mmpretrain):
    tmp = tmp_path_factory.mktemp('pretrain')
    make_photo_digit_crops_imagenet(str(tmp / 'data' / 'imagenet'), num_train=16, num_val=11)
    _coco_2017_layout(tmp, tmp / 'data' / 'coco')
    return tmp


def test_readme_gives_the_tested_commands():
    assert _documented_commands(osp.join(ROOT, 'README.md')) == _documented_commands(DOC)


def test_newcomer_commands_train_a_bgn_classifier_then_a_detector_from_it(workdir):
    classify, detect = _documented_commands(DOC)
    assert classify[:2] == ['python', 'tools/train.py'] and detect[:2] == classify[:2]
    log = _run([osp.join(ROOT, *classify[1:2]), osp.join(ROOT, classify[2]), *classify[3:],
                *CLASSIFIER_TINY], cwd=workdir)
    assert 'accuracy/top1' in log  # mmpretrain's metric, after the epoch
    checkpoint = workdir / CLASSIFIER_WORK_DIR / 'epoch_1.pth'
    assert checkpoint.exists()

    # every key of the detector's backbone comes from the classifier, and nothing else
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmnorm_plugin.checkpoint.loading import compare_checkpoint_with_model
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, detect[2]))
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    cfg.model.backbone.init_cfg = None
    backbone = MODELS.build(cfg.model.backbone)
    state = torch.load(checkpoint, map_location='cpu')['state_dict']
    state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    report = compare_checkpoint_with_model(backbone, dict(state_dict=state))
    assert not any(report.values()), report
    assert set(backbone.state_dict()) == set(state)

    log = _run([osp.join(ROOT, detect[1]), osp.join(ROOT, detect[2]), *detect[3:],
                *DETECTOR_TINY], cwd=workdir)
    # through our guarded loader, which verified the classifier's checksum
    assert f'load backbone. in model from: mmnorm-guarded://{CLASSIFIER_WORK_DIR}/epoch_1.pth' in log
    assert f'checkpoint {CLASSIFIER_WORK_DIR}/epoch_1.pth: checksum verified' in log
    # mmengine's load_state_dict(strict=False) names what it could not match
    assert 'missing keys in source state_dict' not in log
    assert 'unexpected key in source state_dict' not in log
    assert re.search(r'Epoch\(train\)\s+\[1\]\[2/2\].*loss: \d', log), log[-3000:]


def test_tools_test_evaluates_the_classifier(workdir):
    checkpoint = workdir / CLASSIFIER_WORK_DIR / 'epoch_1.pth'
    if not checkpoint.exists():
        pytest.skip('needs the classifier of the newcomer test')
    log = _run([osp.join(ROOT, 'tools', 'test.py'),
                osp.join(ROOT, 'configs', 'pretrain', 'resnet50_bgn_8xb2-acc16_in1k.py'),
                str(checkpoint), '--work-dir', str(workdir / 'test_bgn'), '--cfg-options',
                'test_dataloader.dataset.pipeline.1.scale=32',
                'test_dataloader.dataset.pipeline.2.crop_size=32',
                'test_dataloader.num_workers=0'], cwd=workdir)
    metrics = json.loads(open(glob.glob(str(workdir / 'test_bgn' / '*' / '*.json'))[-1]).read())
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0 and 'accuracy/top5' in metrics


def test_mmpretrains_own_train_tool_runs_a_config_through_custom_imports(workdir, mmpretrain):
    """No plugin tool involved: the config's custom_imports registers the norms and the
    cross-scope backbone (mmdet.XBNResNet) for mmpretrain's tools/train.py."""
    tool = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    work_dir = workdir / 'mmpretrain_xbn'
    log = _run([tool, osp.join(ROOT, 'configs', 'pretrain', 'resnet50_xbn-p2_8xb32_in1k.py'),
                '--work-dir', str(work_dir), *CLASSIFIER_TINY, 'train_dataloader.batch_size=2', 'default_hooks.checkpoint.save_last=False',
                'default_hooks.checkpoint.interval=2'], cwd=workdir)
    assert 'accuracy/top1' in log
    assert glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
