"""strip_training_state: release checkpoints without training-only state evaluate identically."""
import os.path as osp
import subprocess
import sys

import numpy as np
import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from torch import nn

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.model_converters.release import (strip_checkpoint_file, strip_training_state,
                                              training_only_keys)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = build_conv_layer(dict(type='CenConv2d'), 3, 8, 3, padding=1)
        self.mabn = build_norm_layer(dict(type='MABN', buffer_size=2, warmup_iters=0,
                                          renorm_hold_iters=0), 8)[1]
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.cbn = build_norm_layer(dict(type='CBN', buffer_num=2), 8)[1]
        self.conv3 = nn.Conv2d(8, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        # a foreign buffer that shares a CBN counter's name: not CBN state, must stay
        self.register_buffer('num_iters', torch.tensor(5))

    def forward(self, x):
        return self.bn(self.conv3(self.cbn(self.conv2(self.mabn(self.conv1(x))))))


def _trained():
    net = Net().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        opt.zero_grad()
        net(torch.randn(2, 3, 8, 8)).square().mean().backward()
        opt.step()
    return net.eval(), opt


def test_strip_removes_exactly_the_training_only_state_and_evaluates_identically():
    net, opt = _trained()
    checkpoint = dict(state_dict=net.state_dict(), optimizer=opt.state_dict(),
                      message_hub=dict(log_scalars={}), param_schedulers=[],
                      meta=dict(cfg='x = 1', iter=4, seed=np.int64(3), hook_msgs=dict(a=1)))
    release, removed = strip_training_state(checkpoint)
    gone = set(checkpoint['state_dict']) - set(release['state_dict'])
    assert gone == {'cbn.num_iters', 'cbn.hist_count', 'cbn.hist_len', 'cbn.hist_ptr', 'cbn.hist_mean',
                    'cbn.hist_var', 'cbn.hist_mean_proj', 'cbn.hist_var_proj',
                    'cbn.hist_mean_grad', 'cbn.hist_var_grad', 'cbn.hist_valid',
                    'mabn.chi2_history', 'mabn.psi_history'}
    assert 'num_iters' in release['state_dict']  # the foreign buffer
    assert set(release) == {'state_dict', 'meta'}
    assert release['meta'] == dict(cfg='x = 1', iter=4, seed=3,
                                   stripped=['chi2_history', 'hist_count', 'hist_len',
                                             'hist_mean',
                                             'hist_mean_grad', 'hist_mean_proj', 'hist_ptr',
                                             'hist_valid', 'hist_var', 'hist_var_grad',
                                             'hist_var_proj',
                                             'num_iters', 'psi_history'])
    assert removed['norm training state'] > 0 and removed['optimizer'] > 0
    assert set(checkpoint['state_dict']) >= gone  # the input is untouched
    fresh = Net().eval()
    fresh.load_state_dict(release['state_dict'], strict=False)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)


def test_release_checkpoint_loads_weights_only_without_the_plugin(tmp_path):
    net, opt = _trained()
    src, dst = tmp_path / 'full.pth', tmp_path / 'release.pth'
    torch.save(dict(state_dict=net.state_dict(), optimizer=opt.state_dict(),
                    meta=dict(cfg='x = 1', seed=np.int64(3))), src)
    sizes = strip_checkpoint_file(str(src), str(dst))
    assert sizes['file bytes after'] < sizes['file bytes before']
    # a fresh interpreter, no allow-list: plain types only
    code = f"import torch; print(sorted(torch.load({str(dst)!r}, weights_only=True)))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "['meta', 'state_dict']" in out.stdout


def test_strip_refuses_to_overwrite_the_resume_checkpoint(tmp_path):
    torch.save(dict(state_dict={}), tmp_path / 'a.pth')
    import pytest
    with pytest.raises(ValueError, match='new file'):
        strip_checkpoint_file(str(tmp_path / 'a.pth'), str(tmp_path / '.' / 'a.pth'))


def test_cli(tmp_path):
    net, _ = _trained()
    torch.save(dict(state_dict=net.state_dict()), tmp_path / 'full.pth')
    proc = subprocess.run([sys.executable,
                           osp.join(ROOT, 'tools', 'model_converters', 'strip_training_state.py'),
                           str(tmp_path / 'full.pth'), str(tmp_path / 'out' / 'rel.pth')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'removed norm training state' in proc.stdout
    assert not training_only_keys(torch.load(tmp_path / 'out' / 'rel.pth')['state_dict'])
