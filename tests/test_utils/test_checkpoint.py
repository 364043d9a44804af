"""mmengine Runner checkpoints load under torch's weights-only unpickler; other pickles do not."""
import argparse
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

import mmnorm_plugin  # noqa: F401  (allow-lists the mmengine checkpoint globals)


def _runner_like_checkpoint(model):
    hub = MessageHub('test_checkpoint_hub')
    for i in range(3):
        hub.update_scalar('train/loss', float(i) + 0.5)
    hub.update_info('iter', 3)
    return dict(
        meta=dict(epoch=1, iter=3, seed=np.int64(7), mmengine_version='0.10.7',
                  dataset_meta=dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)]),
                  experiment_name='x', time='now'),
        state_dict=model.state_dict(),
        message_hub=hub.state_dict(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict(),
        param_schedulers=[dict(base_values=[0.1], last_step=3, verbose=False)])


def test_weights_only_is_still_on():
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in (None, '', '0')


def test_runner_checkpoint_round_trip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / 'ckpt.pth'
    torch.save(_runner_like_checkpoint(model), path)
    ckpt = _load_checkpoint(str(path), map_location='cpu')
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert ckpt['message_hub']['log_scalars']['train/loss'].mean() == pytest.approx(1.5)
    assert ckpt['meta']['seed'] == 7
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    load_checkpoint(fresh, str(path), map_location='cpu')
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


class _Payload:
    """Stands for any object a malicious or foreign checkpoint could carry."""

    def __reduce__(self):
        return (print, ('this must never run',))


@pytest.mark.parametrize('payload', [_Payload(), argparse.Namespace(a=1)])
def test_unexpected_pickled_objects_are_refused(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, meta=dict(x=payload)), path)
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path), map_location='cpu')
