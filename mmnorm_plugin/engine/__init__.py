"""Runner hooks, registered in mmengine's root ``HOOKS`` (visible from every scope), and the
``'atomic_local'`` file backend."""
from .cbn_hooks import CBNBurnInHook
from .compile_norms import CompileNormsHook
from .precise_norm import PreciseNormHook, recalibrate_norms
from .safe_checkpoint import AtomicLocalBackend, SafeCheckpointHook, use_safe_checkpoint_hook
from .weights_only_checkpoint import WeightsOnlyCheckpointHook

__all__ = ['CBNBurnInHook', 'CompileNormsHook', 'PreciseNormHook', 'SafeCheckpointHook',
           'AtomicLocalBackend', 'WeightsOnlyCheckpointHook', 'recalibrate_norms',
           'use_safe_checkpoint_hook']
