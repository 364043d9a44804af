"""Runner hooks, registered in mmengine's root ``HOOKS`` (visible from every scope), the
``'atomic_local'`` file backend and the ``mmnorm-guarded://`` checkpoint scheme."""
from .cbn_hooks import CBNBurnInHook
from .compile_norms import CompileNormsHook
from .guarded_loading import GUARDED_PREFIX, GuardedCheckpointLoadHook, guarded
from .precise_norm import PreciseNormHook, recalibrate_norms
from .rank_zero_logger import RankZeroLoggerHook, use_rank_zero_logger
from .safe_checkpoint import AtomicLocalBackend, SafeCheckpointHook, use_safe_checkpoint_hook
from .weights_only_checkpoint import WeightsOnlyCheckpointHook

__all__ = ['CBNBurnInHook', 'CompileNormsHook', 'PreciseNormHook', 'SafeCheckpointHook',
           'AtomicLocalBackend', 'WeightsOnlyCheckpointHook', 'GuardedCheckpointLoadHook',
           'GUARDED_PREFIX', 'guarded', 'recalibrate_norms', 'use_safe_checkpoint_hook',
           'RankZeroLoggerHook', 'use_rank_zero_logger']
