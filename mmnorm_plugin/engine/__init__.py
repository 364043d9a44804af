"""Runner hooks, registered in mmengine's root ``HOOKS`` (visible from every scope), and the
``'atomic_local'`` file backend."""
from .cbn_hooks import CBNBurnInHook
from .safe_checkpoint import AtomicLocalBackend, SafeCheckpointHook, use_safe_checkpoint_hook

__all__ = ['CBNBurnInHook', 'SafeCheckpointHook', 'AtomicLocalBackend',
           'use_safe_checkpoint_hook']
