"""Prepare the plugin norms for mmengine's ``compile`` option, so that they compile too.

mmengine's ``Runner.train`` calls the hooks' ``before_run``, then wraps ``model.train_step`` in
``torch.compile(**cfg.compile)`` (``_maybe_compile``, after the model is wrapped and the
checkpoint loaded), then runs the loop. Two layers find what they need in the autograd graph,
which Dynamo cannot trace: CBN and BKN the conv that produced their input, BKN the chain of
ReLUs, sums and upsamplings back to the previous BKN. Left alone, Dynamo breaks the graph
around them and they run eager. :class:`CompileNormsHook` does what they need instead:

* ``before_run``: taps the convolutions of the unwrapped model
  (:func:`~mmnorm_plugin.norms.conv_origin.tap_convolutions`; forward hooks that a compiled
  forward traces, giving the same conv and values as autograd in eager mode);
* when the model has a BKN or a CBN, the first training iteration of the run calls the
  compiled ``train_step`` eagerly (``torch.compiler.set_stance('force_eager')`` for that one
  call): BKN records its layer chain, which the compiled forwards then replay, and CBN learns
  its call sites before Dynamo specializes on them. It is an ordinary training step on the
  loop's own batch: nothing is consumed, repeated or skipped, and the weights are those of an
  uncompiled run.

Without ``compile`` (absent, ``None`` or ``False``, as mmengine reads it) the hook does nothing.

Where it comes from: our ``tools/train.py`` adds it to the config of a run that sets
``compile``, in the file or with ``--cfg-options compile=True``, whatever the config's scope
(mmdet, mmpretrain, mmseg; :mod:`~mmnorm_plugin.apis.mmdet_tools`). Configs run by
mmpretrain's or mmseg's own tools list it in
``custom_hooks`` (``custom_hooks = [dict(type='CompileNormsHook')]``, inherited from
``configs/_base_/compile_norms.py``). Not through ``configs/_base_/plugin.py``: a list in a base
config is replaced, not extended, by a child's ``custom_hooks``, so hooks there would vanish
from some configs silently, and a custom runner (``runner_type``) would displace a user's own
runner. A config that defines its own ``custom_hooks`` adds the entry itself; forgetting it
costs speed (the norms run eager between graph breaks), never correctness.
"""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..norms.bkn import BKN
from ..norms.cbn import CBN
from ..norms.conv_origin import tap_convolutions

__all__ = ['CompileNormsHook', 'compile_requested', 'use_compile_norms_hook']


def compile_requested(cfg) -> bool:
    """Whether mmengine's ``Runner`` compiles ``train_step`` for ``cfg`` (its own reading of
    ``cfg.compile``: ``None``/absent and ``False`` do not compile, ``True`` or a dict does)."""
    value = cfg.get('compile', None) if cfg is not None else None
    return value is not None and value is not False


def _eager_first(model: torch.nn.Module) -> int:
    """The layers that learn their structure in their first training forward, eagerly: BKN its
    layer chain (which a compiled forward replays; without it the forward cannot trace), CBN
    its call sites (which compiled code would otherwise specialize on before they are known,
    and compile the whole step again one iteration later)."""
    return sum(1 for m in model.modules() if isinstance(m, (BKN, CBN)))


def use_compile_norms_hook(cfg) -> None:
    """Add :class:`CompileNormsHook` to ``cfg.custom_hooks`` unless it is listed.

    The hook reads ``compile`` when the run starts, so a config that has it without setting
    ``compile`` trains as without it.
    """
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, CompileNormsHook) or (
            isinstance(h, dict) and h.get('type') in ('CompileNormsHook', CompileNormsHook))
               for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='CompileNormsHook')]


@HOOKS.register_module()
class CompileNormsHook(Hook):
    """Make mmengine's ``compile`` option compile the plugin norms instead of breaking the
    graph around them (see the module docstring for what it does and why it is a hook).

    A no-op unless the run's config sets ``compile``. Add it with
    ``custom_hooks = [dict(type='CompileNormsHook')]``; our ``tools/train.py`` adds it itself.
    """
    priority = 'VERY_HIGH'  # taps in place before any other hook runs a forward

    def __init__(self) -> None:
        self._eager_step = False

    def before_run(self, runner) -> None:
        self._eager_step = False
        if not compile_requested(getattr(runner, 'cfg', None)):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        tapped = tap_convolutions(model)
        learning = _eager_first(model)
        self._eager_step = learning > 0
        print_log(f'CompileNormsHook: {tapped} convolutions tapped for the norms under '
                  'torch.compile' + (f'; the first training iteration runs eager ({learning} '
                                     'CBN/BKN layers learn their call sites and layer chains)'
                                     if learning else ''), logger='current')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if not self._eager_step:
            return
        self._eager_step = False
        _run_next_train_step_eager(runner.model)


def _run_next_train_step_eager(model: torch.nn.Module) -> None:
    """Make the next ``model.train_step`` call run without compiling, then step aside.

    mmengine set the compiled ``train_step`` as an instance attribute; a one-shot wrapper in
    its place puts the original back before calling it (so an exception inside the step leaves
    the model as mmengine made it) and runs it under ``force_eager``, which a context manager
    restores on the way out whatever happens.
    """
    own = model.__dict__.get('train_step')
    step = model.train_step

    def eager_train_step(*args, **kwargs):
        if own is None:
            del model.train_step
        else:
            model.train_step = own
        with torch.compiler.set_stance('force_eager'):
            return step(*args, **kwargs)

    model.train_step = eager_train_step
