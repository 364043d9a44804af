"""WeightsOnlyCheckpointHook: checkpoints load with torch's defaults and resume exactly."""
import io

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmnorm_plugin.engine import WeightsOnlyCheckpointHook


def _checkpoint():
    hub = MessageHub('test_weights_only_hook')
    for i in range(5):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
    hub.update_info('iter', 5)
    hub.update_info('stats', np.arange(3.0))
    return dict(meta=dict(seed=np.int64(7), iter=5, dataset_meta=dict(classes=('a', 'b'))),
                state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict())


def test_saved_checkpoint_needs_no_allow_list_and_restores_exactly():
    checkpoint = _checkpoint()
    original = checkpoint['message_hub']['log_scalars']['train/loss']
    hook = WeightsOnlyCheckpointHook()
    hook.before_save_checkpoint(None, checkpoint)
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    buf.seek(0)
    allowed = {getattr(g, '__module__', '') for g in torch.serialization.get_safe_globals()}
    assert not any(m.startswith(('numpy', 'mmengine', 'builtins')) for m in allowed)
    loaded = torch.load(buf)  # torch's default: weights_only=True, nothing of ours allowed
    hook.after_load_checkpoint(None, loaded)
    restored = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(restored, HistoryBuffer)
    for a, b in zip(restored.data, original.data):
        np.testing.assert_array_equal(a, b)
    assert restored.mean(3) == original.mean(3) and restored.max_length == original.max_length
    np.testing.assert_array_equal(loaded['message_hub']['runtime_info']['stats'], np.arange(3.0))
    assert loaded['meta']['seed'] == 7 and loaded['meta']['dataset_meta']['classes'] == ('a', 'b')
    hub = MessageHub('test_weights_only_hook_resumed')
    hub.load_state_dict(loaded['message_hub'])
    assert hub.get_scalar('train/loss').current() == original.current()


def test_plain_mmengine_checkpoints_pass_through():
    checkpoint = dict(meta=dict(iter=1), state_dict={})
    WeightsOnlyCheckpointHook().after_load_checkpoint(None, checkpoint)
    assert checkpoint == dict(meta=dict(iter=1), state_dict={})
