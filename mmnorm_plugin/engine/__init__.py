"""Runner hooks, registered in mmengine's root ``HOOKS`` (visible from every scope)."""
from .cbn_hooks import CBNBurnInHook
from .weights_only_checkpoint import WeightsOnlyCheckpointHook

__all__ = ['CBNBurnInHook', 'WeightsOnlyCheckpointHook']
