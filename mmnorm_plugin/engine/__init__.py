"""Runner hooks, registered in mmengine's root ``HOOKS`` (visible from every scope)."""
from .cbn_hooks import CBNBurnInHook

__all__ = ['CBNBurnInHook']
