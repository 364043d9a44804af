"""Runner hooks, registered in mmengine's root ``HOOKS`` (visible from every scope)."""
from .cbn_hooks import CBNBurnInHook
from .precise_norm import PreciseNormHook, recalibrate_norms
from .weights_only_checkpoint import WeightsOnlyCheckpointHook

__all__ = ['CBNBurnInHook', 'PreciseNormHook', 'WeightsOnlyCheckpointHook', 'recalibrate_norms']
