"""Runner checkpoints that ``torch.load``'s weights-only default reads with nothing allow-listed.

mmengine 0.10.7 pickles its ``MessageHub`` into every checkpoint: ``HistoryBuffer`` objects
holding numpy arrays, whose statistics methods are pickled as ``getattr(HistoryBuffer, 'mean')``.
torch >= 2.6 refuses those globals by default, so a Runner checkpoint cannot be resumed or
evaluated (or opened by mmdet's ``init_detector``/``DetInferencer``) unless someone widens the
unpickler, which is what a malicious file needs (see :mod:`mmnorm_plugin.checkpoint.loading`).

:class:`WeightsOnlyCheckpointHook` removes the need instead of widening anything: before a
checkpoint is written it replaces every ``HistoryBuffer`` by a tagged dict of tensors and every
numpy value by a tensor or a Python number, so the file holds only tensors, containers, strings
and numbers; after a checkpoint is loaded (``--resume``, ``load_from``) it restores the buffers,
so the loss history and the runtime info resume exactly as mmengine saved them, rebuilt from
validated tensors only. Our ``tools/train.py`` adds the hook to every config; a config can list
it in ``custom_hooks``.
"""
import pickle
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

from ..checkpoint.legacy_objects import numeric_array, rebuild_history_buffer
from ..checkpoint.loading import RefusedCheckpoint

__all__ = ['WeightsOnlyCheckpointHook', 'to_weights_only', 'from_weights_only']

_BUFFER_TAG = '__mmnorm_history_buffer__'
_ARRAY_TAG = '__mmnorm_ndarray__'


def to_weights_only(obj: Any) -> Any:
    """A copy of ``obj`` that the weights-only unpickler accepts (numpy and ``HistoryBuffer``
    replaced by tagged tensors); objects of other types are returned as they are."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_BUFFER_TAG: True, 'log': torch.from_numpy(np.array(log)),
                'count': torch.from_numpy(np.array(count)), 'max_length': int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        return {_ARRAY_TAG: torch.from_numpy(np.array(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, to_weights_only(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(to_weights_only(v) for v in obj)
    return obj


def from_weights_only(obj: Any, where: str = 'checkpoint') -> Any:
    """Inverse of :func:`to_weights_only` (numpy scalars come back as Python numbers).

    The tagged dicts come from a file, so they are rebuilt only from validated data
    (:func:`~mmnorm_plugin.checkpoint.legacy_objects.rebuild_history_buffer`: 1-d numeric
    tensors of one length, an int ``max_length``; arrays numeric); anything else raises
    ``pickle.UnpicklingError`` naming the entry (``where``).
    """
    if isinstance(obj, dict):
        if _BUFFER_TAG in obj:
            if obj.get(_BUFFER_TAG) is not True or set(obj) != {_BUFFER_TAG, 'log', 'count',
                                                                 'max_length'}:
                raise pickle.UnpicklingError(f'refused {where}: a malformed HistoryBuffer record '
                                             f'(keys {sorted(map(str, obj))!s:.80})')
            return rebuild_history_buffer(obj['log'], obj['count'], obj['max_length'], where)
        if _ARRAY_TAG in obj:
            if set(obj) != {_ARRAY_TAG}:
                raise pickle.UnpicklingError(f'refused {where}: a malformed ndarray record')
            return numeric_array(obj[_ARRAY_TAG], where)
        return type(obj)((k, from_weights_only(v, f'{where}[{k!r:.40}]')) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(from_weights_only(v, f'{where}[{i}]') for i, v in enumerate(obj))
    return obj


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Write checkpoints that load under ``torch.load(weights_only=True)`` with no allow-list.

    Runs late before a save (``LOW``: after the hooks that add entries, before
    ``SafeCheckpointHook`` (``VERY_LOW``) hashes the sections, so the checksum covers what is
    written) and converts ``meta`` and ``message_hub``; ``after_load_checkpoint`` converts them
    back before mmengine reads them. Checkpoints without the tags (plain mmengine ones) pass
    through unchanged.
    """
    priority = 'LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('meta', 'message_hub'):
            if key in checkpoint:
                checkpoint[key] = to_weights_only(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from .guarded_loading import unguarded
        path = unguarded(getattr(runner, '_load_from', None) or 'checkpoint')
        for key in ('meta', 'message_hub'):
            if key in checkpoint:
                try:
                    checkpoint[key] = from_weights_only(checkpoint[key], f'[{key!r}]')
                except RefusedCheckpoint:
                    raise
                except pickle.UnpicklingError as err:
                    raise RefusedCheckpoint(path, str(err).replace('refused ', '', 1)) from None
