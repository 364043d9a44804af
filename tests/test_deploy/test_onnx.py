"""Convert -> torch.onnx.export -> onnxruntime: the deployed backbone + neck computes what the
plugin model computes in eval mode (within 1e-4), for every norm of the package.

The ``deploy`` extra (onnx, onnxruntime, onnxscript) is installed by ``make test``/CI
(tools/run_tests.sh); elsewhere the test skips, saying what to install. In CI it fails instead:
a skipped test there would hide a broken install step.
"""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.deploy.onnx import BackboneNeck
from mmnorm_plugin.norms.mabn import MABN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_{}_tiny-coco.py')
SHAPE = (1, 3, 96, 128)  # not square: height and width are not mixed up

if os.environ.get('CI', '').lower() != 'true':
    for _module in ('onnxruntime', 'onnxscript', 'onnx'):
        pytest.importorskip(_module, reason=f'{_module} is not installed: the ONNX test needs '
                            'the deploy extra (pip install -e .[deploy], or '
                            'MMNORM_EXTRAS=deploy bash tools/setup_env.sh)')

pytestmark = pytest.mark.slow


def _detector_with_moved_statistics(method, ckpt):
    """A demo detector whose norms' running statistics are far from BN's (0, 1) init, saved as
    a checkpoint: a conversion that ignored them would show."""
    from mmdet.apis import init_detector
    from mmengine.runner import save_checkpoint
    cfg = Config.fromfile(DEMO.format(method))
    torch.manual_seed(0)
    model = init_detector(cfg, None, device='cpu')
    generator = torch.Generator().manual_seed(1)
    for norm in model.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):  # the plugin's norms too
            if not isinstance(norm, MABN):  # MABN does not center: its mean stays 0
                norm.running_mean.copy_(torch.randn(norm.running_mean.shape,
                                                    generator=generator))
            norm.running_var.uniform_(0.5, 1.5, generator=generator)
            norm.weight.data.uniform_(0.5, 1.5, generator=generator)
            norm.bias.data.uniform_(-0.5, 0.5, generator=generator)
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    return cfg, model.eval()


def _onnxruntime_features(path, img):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['img']
    return session.run(None, {'img': img.numpy()})


@pytest.mark.parametrize('method', ['cbn', 'mabn', 'bgn', 'bkn'])
def test_onnxruntime_matches_the_plugin_model(method, tmp_path):
    from mmnorm_plugin.deploy import convert_detector, export_backbone_neck
    ckpt = str(tmp_path / 'model.pth')
    cfg, model = _detector_with_moved_statistics(method, ckpt)
    img = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = BackboneNeck(model)(img)  # the plugin's own eval forward, unconverted
    out = convert_detector(cfg, ckpt, str(tmp_path / 'deploy.py'), str(tmp_path / 'deploy.pth'))
    path = export_backbone_neck(out['model'], str(tmp_path / 'model.onnx'), SHAPE)
    got = _onnxruntime_features(path, img)
    assert len(got) == len(expected) == 5  # the FPN levels
    for ours, theirs in zip(expected, got):
        assert theirs.shape == tuple(ours.shape)
        np.testing.assert_allclose(theirs, ours.numpy(), rtol=0, atol=1e-4)
    assert max(float(np.abs(t).max()) for t in got) > 1e-2  # not a trivially zero graph


def test_export_refuses_an_unconverted_model(tmp_path):
    from mmnorm_plugin.deploy import export_backbone_neck
    _, model = _detector_with_moved_statistics('cbn', str(tmp_path / 'm.pth'))
    with pytest.raises(ValueError, match=r"\['CBN'\] still in the model: convert it first"):
        export_backbone_neck(model, str(tmp_path / 'm.onnx'), SHAPE)


def test_convert_norms_cli_writes_the_onnx_file(tmp_path):
    ckpt = str(tmp_path / 'model.pth')
    _, model = _detector_with_moved_statistics('mabn', ckpt)
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'deploy', 'convert_norms.py'), DEMO.format('mabn'),
         ckpt, str(tmp_path / 'out'), '--onnx', '--onnx-shape', str(SHAPE[2]), str(SHAPE[3])],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    path = tmp_path / 'out' / 'faster-rcnn_r18-w16_fpn_mabn_tiny-coco_deploy_backbone_neck.onnx'
    img = torch.randn(SHAPE)
    with torch.no_grad():
        expected = BackboneNeck(model)(img)
    for ours, theirs in zip(expected, _onnxruntime_features(str(path), img)):
        np.testing.assert_allclose(theirs, ours.numpy(), rtol=0, atol=1e-4)

