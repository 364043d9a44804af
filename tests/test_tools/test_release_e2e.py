"""End to end on the tiny dataset: a config without custom_imports trained by our tools/train.py
loads in mmdet's DetInferencer/init_detector in a fresh interpreter that never imports the
plugin; its stripped (release) checkpoint is smaller and evaluates to the same COCO metrics,
also under the BN twin config."""
import glob
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE = osp.join(ROOT, 'configs', '_base_')
BN_TWIN = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py')
ITERS = 3

pytestmark = pytest.mark.slow


def _run(args, cwd, timeout=600, env=None):
    env = dict(os.environ, **(env or {}))
    env.setdefault('OMP_NUM_THREADS', '2')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _metrics(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    assert files, f'no metrics json in {work_dir}'
    return json.loads(open(files[-1]).read().splitlines()[-1])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A CBN detector from a config WITHOUT custom_imports, trained ITERS iterations."""
    path = tmp_path_factory.mktemp('release')
    make_tiny_coco(str(path / 'data' / 'tiny_coco'), num_train=8, num_val=4)
    config = path / 'cbn_no_imports.py'
    config.write_text(textwrap.dedent(f"""\
        _base_ = ['{BASE}/models/faster-rcnn_r18-w16_fpn_tiny.py',
                  '{BASE}/datasets/tiny_coco_detection.py', '{BASE}/tiny_runtime.py']
        norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=2)
        model = dict(backbone=dict(norm_cfg=norm_cfg), neck=dict(norm_cfg=norm_cfg),
                     roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
        train_cfg = dict(max_iters={ITERS}, val_interval={ITERS})
        default_hooks = dict(checkpoint=dict(interval={ITERS}), logger=dict(interval=1))
        """))
    assert 'custom_imports' not in config.read_text()
    _run([osp.join(ROOT, 'tools', 'train.py'), str(config), '--work-dir', str(path / 'train')],
         cwd=path)
    return path, config


def test_saved_config_and_checkpoint_load_in_mmdet_without_importing_the_plugin(trained):
    path, config = trained
    dumped = path / 'train' / config.name
    text = dumped.read_text()
    assert 'custom_imports' in text and "'mmnorm_plugin'" in text
    ckpt = path / 'train' / f'iter_{ITERS}.pth'
    image = sorted(glob.glob(str(path / 'data' / 'tiny_coco' / 'val' / '*')))[0]
    code = textwrap.dedent(f"""\
        import sys
        from mmdet.apis import DetInferencer, init_detector, inference_detector
        assert 'mmnorm_plugin' not in sys.modules
        inferencer = DetInferencer(model={str(dumped)!r}, weights={str(ckpt)!r}, device='cpu')
        assert 'mmnorm_plugin' in sys.modules  # imported by the saved config's custom_imports
        result = inferencer({image!r}, return_vis=False)
        print('predictions', len(result['predictions'][0]['bboxes']))
        model = init_detector({str(dumped)!r}, {str(ckpt)!r}, device='cpu')
        print('norm', type(model.neck.lateral_convs[0].bn).__name__)
        inference_detector(model, {image!r})
        """)
    env = dict(PYTHONPATH=ROOT)  # where `import mmnorm_plugin` resolves; the script never does it
    proc = _run(['-c', code], cwd=path, env=env)
    assert 'predictions' in proc.stdout and 'norm CBN' in proc.stdout


def test_stripped_checkpoint_is_smaller_and_evaluates_to_the_same_map(trained):
    path, config = trained
    ckpt = path / 'train' / f'iter_{ITERS}.pth'
    release = path / 'release.pth'
    proc = _run([osp.join(ROOT, 'tools', 'model_converters', 'strip_training_state.py'),
                 str(ckpt), str(release)], cwd=path)
    print(proc.stdout)
    assert release.stat().st_size < 0.6 * ckpt.stat().st_size
    results = {}
    for name, cfg, weights in [('full', config, ckpt), ('release', config, release),
                               ('bn_twin', BN_TWIN, release)]:
        _run([osp.join(ROOT, 'tools', 'test.py'), str(cfg), str(weights),
              '--work-dir', str(path / f'test_{name}'), '--out', str(path / f'{name}.pkl')],
             cwd=path)
        results[name] = {k: v for k, v in _metrics(path / f'test_{name}').items()
                         if k.startswith('coco/')}
    print(results)
    assert results['full'] and results['full'] == results['release'] == results['bn_twin']
    # mAP after 3 iterations is near 0, so compare the raw detections too: bit-identical
    preds = {name: pickle.load(open(path / f'{name}.pkl', 'rb')) for name in results}
    assert sum(len(p['pred_instances']['scores']) for p in preds['full']) > 0
    for name in ('release', 'bn_twin'):
        for a, b in zip(preds['full'], preds[name], strict=True):
            for key in ('bboxes', 'scores', 'labels'):
                assert torch.equal(a['pred_instances'][key], b['pred_instances'][key]), name
    # the release checkpoint needs no config either: DetInferencer reads meta['cfg']
    image = sorted(glob.glob(str(path / 'data' / 'tiny_coco' / 'val' / '*')))[0]
    code = (f"from mmdet.apis import DetInferencer\n"
            f"r = DetInferencer(weights={str(release)!r}, device='cpu')({image!r})\n"
            f"print('ok', len(r['predictions']))")
    assert 'ok 1' in _run(['-c', code], cwd=path, env=dict(PYTHONPATH=ROOT)).stdout
