"""Strip training-only state from an mmengine checkpoint, for release and evaluation.

A Runner checkpoint holds everything needed to *resume* training: the optimizer state, the
parameter schedulers, the message hub (loss history) and, for the plugin's stateful norms,
their cross-iteration state. None of it is used at inference:

* CBN: the window ``hist_*`` (means, variances, validity mask, element counts, their weight
  projections and gradients: ``buffer_num x C`` per statistic, plus
  ``buffer_num x C x C_in k^2`` weight gradients — 63 % of the CBN demo checkpoint) and the counters ``num_iters``, ``hist_len``, ``hist_ptr``.
  Eval uses ``running_mean``/``running_var``/``weight``/``bias`` only, exactly like BN; a CBN
  layer that loads a state dict without any of these buffers starts with an empty window
  (:meth:`CBN._adapt_state`), so a stripped checkpoint also loads into a CBN model.
* MABN: the rings ``chi2_history``/``psi_history`` (``buffer_size x C``). Eval is
  ``weight * x / sqrt(running_var + eps) + bias``; the rings only feed training.

Both are recognised by buffer name *and* a sibling key of the same layer (``X.num_iters`` is
stripped only if ``X.hist_mean`` exists, ``X.chi2_history`` only with ``X.psi_history``), so a
foreign buffer that happens to share a name is kept. ``running_*``, ``num_batches_tracked``
and every parameter stay: the stripped ``state_dict`` evaluates exactly as the full one.

Resume checkpoints are never modified in place: :func:`strip_training_state` returns a new
dict and the CLI (``tools/model_converters/strip_training_state.py``) writes a new file.
"""
import os
from collections import OrderedDict
from typing import Dict, Tuple

import torch

from ..checkpoint.keys import is_training_only_key, training_only_keys

__all__ = ['is_training_only_key', 'training_only_keys', 'strip_training_state',
           'strip_checkpoint_file', 'RELEASE_META_KEYS']

# checkpoint['meta'] entries kept in a release checkpoint (plain Python types: loadable with
# torch.load(weights_only=True) without importing anything)
RELEASE_META_KEYS = ('cfg', 'dataset_meta', 'mmengine_version', 'mmdet_version', 'epoch',
                     'iter', 'time', 'experiment_name', 'seed')


def _plain_meta(meta: dict) -> dict:
    out = {}
    for key in RELEASE_META_KEYS:
        if key in meta:
            value = meta[key]
            if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:  # numpy scalar
                value = value.item()
            out[key] = value
    return out


def strip_training_state(checkpoint: Dict) -> Tuple[Dict, Dict[str, int]]:
    """Return ``(release checkpoint, {what: bytes removed})``; ``checkpoint`` is not modified.

    Keeps ``state_dict`` without training-only norm state, and ``meta`` reduced to
    :data:`RELEASE_META_KEYS`. Drops everything else: ``optimizer``, ``param_schedulers``,
    ``message_hub``, ``ema_state_dict`` (with ``EMAHook``, mmengine already saves the averaged
    weights in ``state_dict`` and the raw ones in ``ema_state_dict``).
    """
    if 'state_dict' in checkpoint:
        state_dict = checkpoint['state_dict']
    else:  # a bare state dict
        state_dict, checkpoint = checkpoint, {'state_dict': checkpoint}
    drop = set(training_only_keys(state_dict.keys()))
    removed = {'norm training state': sum(_nbytes(state_dict[k]) for k in drop)}
    for key, value in checkpoint.items():
        if key not in ('state_dict', 'meta'):
            removed[key] = _nbytes(value)
    release = {'state_dict': OrderedDict((k, v) for k, v in state_dict.items() if k not in drop)}
    if isinstance(checkpoint.get('meta'), dict):
        release['meta'] = _plain_meta(checkpoint['meta'])
        release['meta']['stripped'] = sorted({k.rpartition('.')[2] for k in drop})
    return release, removed


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def strip_checkpoint_file(src: str, dst: str) -> Dict[str, int]:
    """Write the release form of checkpoint ``src`` to ``dst`` (a new file); return sizes.

    ``src`` is loaded verified (:func:`~mmnorm_plugin.checkpoint.safety.load_verified_checkpoint`:
    a damaged or refused file raises one line); ``dst`` records its own checksum.
    """
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError('write the stripped checkpoint to a new file: the original is the '
                         'resume checkpoint and must stay complete')
    from ..checkpoint.safety import add_checksum, load_verified_checkpoint
    # verified, weights-only; its saved config text is copied as data, never run
    checkpoint = load_verified_checkpoint(src)
    release, removed = strip_training_state(checkpoint)
    if isinstance(release.get('meta'), dict):  # the release file verifies when it is loaded
        add_checksum(release)
    torch.save(release, dst)
    removed['file bytes before'] = os.path.getsize(src)
    removed['file bytes after'] = os.path.getsize(dst)
    return removed
