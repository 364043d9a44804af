"""The iteration clock: where a training iteration ends, for layers whose state is per iteration.

A training iteration ends at an optimizer step. The first call of
:func:`listen_for_iteration_end` registers one process-wide ``torch.optim`` step post-hook
(:func:`torch.optim.optimizer.register_optimizer_step_post_hook`); it calls
``layer._end_iteration()`` of every listening layer, held weakly. CBN listens: its call sites
and burn-in count optimizer steps, not calls.
"""
import weakref

import torch

__all__ = ['listen_for_iteration_end', 'end_iteration', 'remove_step_hook']

_iteration_listeners: 'weakref.WeakSet' = weakref.WeakSet()
_optimizer_step_hook = None


def listen_for_iteration_end(layer: torch.nn.Module) -> None:
    """Call ``layer._end_iteration()`` at the end of every training iteration (held weakly).

    A training iteration ends at an optimizer step: every ``torch.optim`` optimizer runs the
    global step post-hook registered here on first use (mmengine's ``OptimWrapper``, AMP's
    ``GradScaler`` and gradient accumulation all end in ``optimizer.step()``; a step that AMP
    skips is no boundary). The hook runs outside the model's forward, and in it, a Python flag
    per layer: no device sync, nothing for ``torch.compile`` to trace. Loops that update
    weights without a ``torch.optim`` optimizer call :func:`end_iteration` themselves.
    """
    global _optimizer_step_hook
    if _optimizer_step_hook is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook
        _optimizer_step_hook = register_optimizer_step_post_hook(_after_optimizer_step)
    _iteration_listeners.add(layer)


def end_iteration() -> None:
    """End the current training iteration of every listening layer (CBN: the next training
    call starts a new iteration). Runs after every ``torch.optim`` optimizer step; call it
    directly when the weights are updated by other means."""
    for layer in list(_iteration_listeners):
        layer._end_iteration()


def remove_step_hook() -> None:
    """Remove the ``torch.optim`` step post-hook (:mod:`mmnorm_plugin.integration`'s
    ``uninstall``); the next layer that listens registers it again. Idempotent."""
    global _optimizer_step_hook
    if _optimizer_step_hook is not None:
        _optimizer_step_hook.remove()
        _optimizer_step_hook = None


def _after_optimizer_step(optimizer, args, kwargs) -> None:
    end_iteration()
