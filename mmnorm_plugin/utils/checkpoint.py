"""Load mmengine Runner checkpoints under ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls
``torch.load`` without the argument, so resuming and ``tools/test.py`` fail on the Runner's own
checkpoints (their ``message_hub`` holds ``HistoryBuffer`` objects with numpy arrays). Turning the
safety off for the whole process (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) would also accept
malicious pickles; instead exactly the globals that a Runner checkpoint contains are
allow-listed, and everything else is still refused by torch.

``builtins.getattr`` is on the list because ``HistoryBuffer`` pickles its statistics methods as
``getattr(HistoryBuffer, 'mean')``. It is inert under the weights-only unpickler: that unpickler
only *calls* allow-listed callables, so an attribute fetched through ``getattr`` cannot be
invoked.
"""
from typing import List

import torch

__all__ = ['mmengine_checkpoint_globals', 'allow_mmengine_checkpoints']


def mmengine_checkpoint_globals() -> List[object]:
    """The non-tensor globals pickled into an mmengine 0.10.x Runner checkpoint."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'float16', 'float32', 'float64')]
    return [np.ndarray, np.dtype, _reconstruct, scalar, HistoryBuffer, getattr, *dtype_classes]


def allow_mmengine_checkpoints() -> None:
    """Register :func:`mmengine_checkpoint_globals` as torch safe globals (idempotent)."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
