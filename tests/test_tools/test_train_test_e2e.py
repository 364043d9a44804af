"""tools/train.py -> tools/test.py on the tiny dataset, resume, and mmdet's own train.py.

Runs the real CLIs in subprocesses, in a temporary working directory holding a freshly
generated tiny dataset (relative `data/tiny_coco/` as in the configs).
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmnorm_plugin.apis.mmdet_tools import MMDET_TOOLS
from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading
from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# the main job (CBN demo) and a Mask R-CNN for segm metrics
FASTER = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py')
MASK = osp.join(ROOT, 'configs', 'demo', 'mask-rcnn_r18-w16_fpn_bn_tiny-coco.py')
# CBN's cross-iteration window from the first iteration on, so checkpoints carry history
NO_BURNIN = [f'model.{part}.norm_cfg.burnin_iters=0'
             for part in ('backbone', 'neck', 'roi_head.bbox_head')]

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('e2e')
    make_tiny_coco(str(path / 'data' / 'tiny_coco'), num_train=8, num_val=4)
    return path


def _run(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'))
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)  # the allow-list must be enough
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _short(iters):
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1']


def _metrics(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    assert files, f'no metrics json in {work_dir}'
    return json.loads(open(files[-1]).read().splitlines()[-1])


@pytest.mark.parametrize('config, keys', [
    (FASTER, ['coco/bbox_mAP', 'coco/bbox_mAP_50']),
    (MASK, ['coco/bbox_mAP', 'coco/segm_mAP', 'coco/segm_mAP_50']),
])
def test_train_then_test_reports_finite_coco_metrics(workdir, config, keys):
    name = osp.splitext(osp.basename(config))[0]
    train_dir = workdir / f'train_{name}'
    _run([osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', str(train_dir),
          *_short(3)], cwd=workdir)
    ckpt = train_dir / 'iter_3.pth'
    assert ckpt.exists()
    test_dir = workdir / f'test_{name}'
    proc = _run([osp.join(ROOT, 'tools', 'test.py'), config, str(ckpt), '--work-dir',
                 str(test_dir), '--out', str(test_dir / 'results.pkl')], cwd=workdir)
    metrics = _metrics(test_dir)
    for key in keys:
        assert key in metrics and math.isfinite(metrics[key]), metrics
    assert (test_dir / 'results.pkl').exists()
    assert 'bbox_mAP_copypaste' in proc.stdout + proc.stderr


def test_resume_continues_from_the_checkpoint(workdir):
    train_dir = workdir / 'resume'
    _run([osp.join(ROOT, 'tools', 'train.py'), FASTER, '--work-dir', str(train_dir),
          *_short(2), *NO_BURNIN], cwd=workdir)
    with mmengine_checkpoint_loading():
        first = torch.load(train_dir / 'iter_2.pth', map_location='cpu')
    # the CBN history is part of the checkpoint (2 past iterations in every layer)
    hist_len = {k: int(v) for k, v in first['state_dict'].items() if k.endswith('hist_len')}
    assert hist_len and set(hist_len.values()) == {2}, hist_len
    proc = _run([osp.join(ROOT, 'tools', 'train.py'), FASTER, '--work-dir', str(train_dir),
                 '--resume', *_short(4), *NO_BURNIN], cwd=workdir)
    log = proc.stdout + proc.stderr
    assert 'resumed' in log.lower()
    # training went on from iteration 3 instead of starting over
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    with mmengine_checkpoint_loading():
        resumed = torch.load(train_dir / 'iter_4.pth', map_location='cpu')
    assert first['meta']['iter'] == 2 and resumed['meta']['iter'] == 4
    # the window kept filling from the restored history: 2 + 2 iterations, capped at 3
    assert {int(v) for k, v in resumed['state_dict'].items() if k.endswith('hist_len')} == {3}
    assert {int(v) for k, v in resumed['state_dict'].items() if k.endswith('num_iters')} == {4}
    assert resumed['optimizer']['state'], 'optimizer momentum was not carried over'


def test_mmdets_shipped_train_tool_runs_our_config(workdir):
    train_dir = workdir / 'mmdet_tool'
    _run([osp.join(MMDET_TOOLS, 'train.py'), FASTER, '--work-dir', str(train_dir),
          *_short(1)], cwd=workdir)
    assert (train_dir / 'iter_1.pth').exists()


def test_our_test_tool_loads_a_plain_mmdet_checkpoint_and_refuses_foreign_objects(workdir):
    """A checkpoint written by mmdet's own train.py (no plugin hook) loads in tools/test.py
    (old-format objects rebuilt from validated data), saying it is unverified; one that
    pickles anything else stops with one line naming the file, the refused global and
    --unsafe-load, and loads once the user types --unsafe-load with its path."""
    train_dir = workdir / 'plain_mmdet'
    _run([osp.join(MMDET_TOOLS, 'train.py'), FASTER, '--work-dir', str(train_dir),
          *_short(1)], cwd=workdir)
    ckpt = train_dir / 'iter_1.pth'
    proc = _run([osp.join(ROOT, 'tools', 'test.py'), FASTER, str(ckpt), '--work-dir',
                 str(workdir / 'plain_test')], cwd=workdir)
    assert f'checkpoint {ckpt}: it records no checksum, so it loads unverified' in \
        proc.stdout + proc.stderr
    with mmengine_checkpoint_loading():
        checkpoint = torch.load(ckpt, map_location='cpu')
    checkpoint['meta']['extra'] = argparse.Namespace(note='foreign object')
    foreign = train_dir / 'foreign.pth'
    torch.save(checkpoint, foreign)
    env = dict(os.environ)
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), FASTER,
                           str(foreign), '--work-dir', str(workdir / 'foreign_test')],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert '--unsafe-load' in last and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert f'checkpoint {foreign}: refused the global argparse.Namespace' in last, last
    # the trust names the file (issue 28: --unsafe-load PATH)
    _run([osp.join(ROOT, 'tools', 'test.py'), FASTER, str(foreign), '--unsafe-load',
          str(foreign), '--work-dir', str(workdir / 'foreign_test')], cwd=workdir)
