"""`tools/train.py CONFIG --amp` trains a BGN detector on the CPU (issue 10 item 3).

What mmengine offers on CPU: mmdet's ``--amp`` switches ``optim_wrapper`` to
``AmpOptimWrapper(loss_scale='dynamic')``. Its ``optim_context`` is mmengine's ``autocast``,
which on a CPU-only machine is ``torch.autocast('cpu', dtype=torch.bfloat16)`` (bfloat16 is
the only dtype it allows there, and needs no loss scaling); its ``GradScaler`` disables itself
without CUDA. The one obstacle is the constructor's ``assert is_cuda_available() or ...``
(mmengine 0.10.7); and mmcv 2.1's CPU kernels of ``nms`` and ``RoIAlign`` have no bfloat16
(their CUDA kernels take float16). So the closest CPU path is mmdet's ``--amp`` with that
assertion patched out and those two ops run on float32 copies, in the training process;
nothing in the config or the plugin is changed. On a GPU the same command runs float16
autocast with dynamic loss scaling through the same norm code.
"""
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BGN_CONFIG = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_bgn_tiny-coco.py')

pytestmark = pytest.mark.slow

LAUNCHER = '''
import atexit, json, runpy, sys
import torch
import mmengine.optim.optimizer.amp_optimizer_wrapper as amp
amp.is_cuda_available = lambda: True  # the GPU assertion of the wrapper's constructor
# mmcv 2.1's CPU kernels of nms and RoIAlign have no bfloat16 (their CUDA ones take half):
# run them on float32 copies, as autocast's float32 op list does for torch's own ops
import mmcv.ops
nms_module, roi_module = sys.modules['mmcv.ops.nms'], sys.modules['mmcv.ops.roi_align']
_nms, _roi_align = nms_module.nms, roi_module.roi_align

def nms_float32(boxes, scores, *args, **kwargs):
    dets, keep = _nms(boxes.float(), scores.float(), *args, **kwargs)
    return dets.to(boxes.dtype), keep

def roi_align_float32(feats, rois, *args, **kwargs):
    return _roi_align(feats.float(), rois.float(), *args, **kwargs).to(feats.dtype)

nms_module.nms, roi_module.roi_align = nms_float32, roi_align_float32
seen = set()

def record(module, args, output):
    if type(module).__name__ == 'BGN' and module.training:
        seen.add(str(args[0].dtype))

torch.nn.modules.module.register_module_forward_hook(record)
out_path = sys.argv.pop(1)
atexit.register(lambda: json.dump(sorted(seen), open(out_path, 'w')))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def test_amp_trains_the_bgn_demo_on_cpu(tmp_path):
    make_tiny_coco(str(tmp_path / 'data' / 'tiny_coco'), num_train=4, num_val=2)
    launcher = tmp_path / 'amp_cpu_train.py'
    launcher.write_text(LAUNCHER)
    dtypes_file = tmp_path / 'bgn_input_dtypes.json'
    work_dir = tmp_path / 'work'
    iters = 2
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'))
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    proc = subprocess.run(
        [sys.executable, str(launcher), str(dtypes_file), osp.join(ROOT, 'tools', 'train.py'),
         BGN_CONFIG, '--work-dir', str(work_dir), '--amp', '--cfg-options',
         f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
         f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert 'AmpOptimWrapper' in log
    # the norms really ran on bfloat16 activations
    assert json.loads(dtypes_file.read_text()) == ['torch.bfloat16']
    scalars = sorted(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json')))
    losses = [json.loads(line)['loss'] for line in open(scalars[-1]) if '"loss"' in line]
    assert len(losses) == iters and all(math.isfinite(v) for v in losses), losses
    state = torch.load(work_dir / f'iter_{iters}.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    stats = {k: v for k, v in state.items() if k.endswith(('running_mean', 'running_var'))}
    assert stats
    for key, value in stats.items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), key
