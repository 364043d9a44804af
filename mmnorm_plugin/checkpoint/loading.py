"""Load mmengine Runner checkpoints under torch's weights-only unpickler, in our own tools only.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls
``torch.load`` without the argument, so resuming and ``tools/test.py`` fail on the Runner's own
checkpoints: their ``message_hub`` holds ``HistoryBuffer`` objects with numpy arrays, and each
buffer pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``.

Two rules keep this safe:

* **Nothing is allow-listed at import.** Importing the plugin never changes how anybody else's
  ``torch.load`` behaves. The allow-list is active only inside :func:`mmengine_checkpoint_loading`,
  a context our tools open around their own loads, and it is restored exactly on exit.
* **No general attribute access.** ``builtins.getattr`` itself is never allow-listed: a
  weights-only file that may call ``getattr`` reaches any module's globals through a function
  torch already trusts (``torch.serialization._get_layout.__globals__``) and can rewrite
  ``torch.serialization`` (e.g. turn off the weights-only default for the whole process).
  The name ``builtins.getattr`` is mapped to :func:`_history_buffer_statistic` instead, which
  returns ``HistoryBuffer.<name>`` for a registered statistics method and refuses everything
  else.

A checkpoint that needs more than this is refused by torch; our tools turn that into a one-line
message naming ``--unsafe-load`` (:data:`UNSAFE_LOAD_FLAG`), which a user must type to load a file
they trust with the full pickle machinery, for that run only.

:func:`compare_checkpoint_with_model` backs ``tools/test.py``'s check that a checkpoint fits
the config it is evaluated with (mmengine loads non-strictly and only logs the mismatch, so a
wrong pairing evaluates a half-random model: mAP 0.005 instead of an error).
"""
import contextlib
import os
import pickle
import types
from typing import Iterator, List

import torch

__all__ = ['mmengine_checkpoint_globals', 'mmengine_checkpoint_loading', 'UNSAFE_LOAD_FLAG',
           'unsafe_load_message', 'CheckpointMismatch', 'compare_checkpoint_with_model',
           'config_differences', 'format_mismatch', 'load_foreign_checkpoint']

UNSAFE_LOAD_FLAG = '--unsafe-load'
_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def load_foreign_checkpoint(path: str, trust_pickle: bool = False):
    """``torch.load`` a checkpoint from elsewhere (an official release) for conversion.

    Weights-only unless ``trust_pickle`` (which runs pickled code: trusted files only); a file
    that pickles objects fails with a ``SystemExit`` naming the switch.
    """
    try:
        return torch.load(path, map_location='cpu', weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        raise SystemExit(f'{path} pickles non-tensor objects ({err}); rerun with '
                         '--trust-pickle if you trust the file') from err


def _history_buffer_statistic(owner, name):
    """``getattr`` restricted to what a pickled ``HistoryBuffer`` asks for.

    Stands in for ``builtins.getattr`` during our loads: returns ``HistoryBuffer.<name>`` when
    ``owner`` is the ``HistoryBuffer`` class and ``name`` one of its registered statistics
    methods; anything else (a module, a function's ``__globals__``, a dunder) is refused.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if owner is HistoryBuffer and type(name) is str:
        # the built-in four are put into _statistics_methods by the first __init__ only
        method = (HistoryBuffer._statistics_methods.get(name)
                  or (vars(HistoryBuffer).get(name) if name in _BUILTIN_STATISTICS else None))
        if isinstance(method, types.FunctionType):
            return method
    raise pickle.UnpicklingError(
        f'refused getattr({type(owner).__name__} object, {name!r}): a checkpoint may only name '
        "HistoryBuffer's statistics methods")


def mmengine_checkpoint_globals() -> List[object]:
    """The non-tensor globals pickled into an mmengine 0.10.x Runner checkpoint.

    numpy's array reconstruction and numeric dtypes, ``HistoryBuffer``, and ``builtins.getattr``
    bound to :func:`_history_buffer_statistic` (never to ``getattr`` itself).
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'float16', 'float32', 'float64')]
    return [np.ndarray, np.dtype, _reconstruct, scalar, HistoryBuffer, *dtype_classes,
            (_history_buffer_statistic, 'builtins.getattr')]


@contextlib.contextmanager
def mmengine_checkpoint_loading(unsafe: bool = False) -> Iterator[None]:
    """Within the block, ``torch.load`` accepts mmengine Runner checkpoints.

    On exit the process's allow-list is restored exactly (entries a caller had added before
    stay, ours go). ``unsafe=True`` (the user typed :data:`UNSAFE_LOAD_FLAG`) additionally lets
    ``torch.load`` calls without an explicit ``weights_only`` unpickle anything, for the block
    only: trusted files only.
    """
    before = list(torch.serialization.get_safe_globals())
    env_before = os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    if unsafe:
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)
        if unsafe:
            if env_before is None:
                os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
            else:
                os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = env_before


def unsafe_load_message(err: BaseException, what: str = 'the checkpoint') -> str:
    """One line for a checkpoint the weights-only unpickler refused."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f'{what} pickles objects that are not allowed in a weights-only load ({reason}). '
            f'If you trust the file, rerun with {UNSAFE_LOAD_FLAG} (it can run code stored in '
            'the file).')


class CheckpointMismatch(RuntimeError):
    """The checkpoint does not fit the model built from the config (see the message)."""


def _flatten(cfg, path=''):
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            out.update(_flatten(value, f'{path}.{key}' if path else str(key)))
        return out or {path: {}}
    if isinstance(cfg, (list, tuple)):
        out = {}
        for i, value in enumerate(cfg):
            out.update(_flatten(value, f'{path}[{i}]'))
        return out or {path: type(cfg)()}
    return {path: cfg}


# training-only or initialization settings: they do not change the evaluated model
_NOT_COMPARED = ('train_cfg', 'init_cfg', 'pretrained')


def config_differences(saved_model_cfg, model_cfg, limit: int = 12) -> List[str]:
    """Lines ``path: checkpoint <a> vs config <b>`` for the model configs' differing leaves."""
    saved, now = _flatten(saved_model_cfg, 'model'), _flatten(model_cfg, 'model')
    lines = []
    for key in sorted(set(saved) | set(now)):
        if any(part in key for part in _NOT_COMPARED):
            continue
        a, b = saved.get(key, '<absent>'), now.get(key, '<absent>')
        if a != b:
            lines.append(f'  {key}: checkpoint {a!r} vs config {b!r}')
    if len(lines) > limit:
        lines = lines[:limit] + [f'  ... and {len(lines) - limit} more']
    return lines


def compare_checkpoint_with_model(model, checkpoint: dict, model_cfg=None) -> dict:
    """What differs between ``checkpoint`` and ``model`` (built from ``model_cfg``).

    Returns ``dict(missing, unexpected, shapes, config)``: model keys absent from the
    checkpoint, checkpoint keys the model does not have, ``(key, ckpt shape, model shape)``
    mismatches, and the differing leaves of the checkpoint's saved ``meta['cfg'].model`` vs
    ``model_cfg``. Training-only norm state (CBN windows, MABN rings: see
    :mod:`mmnorm_plugin.converters.release`) and ``num_batches_tracked`` are not compared:
    a stripped checkpoint, or a CBN checkpoint under its BN twin config, is a match.
    """
    from .keys import is_training_only_key
    state = checkpoint.get('state_dict', checkpoint)
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    ckpt_keys, own_keys = set(state), set(own)

    def relevant(key, keys):
        return not (is_training_only_key(key, keys) or key.endswith('num_batches_tracked'))

    missing = sorted(k for k in own_keys - ckpt_keys if relevant(k, own_keys))
    unexpected = sorted(k for k in ckpt_keys - own_keys if relevant(k, ckpt_keys))
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape))
              for k in sorted(ckpt_keys & own_keys)
              if relevant(k, own_keys) and hasattr(state[k], 'shape')
              and tuple(state[k].shape) != tuple(own[k].shape)]
    config = []
    saved_cfg = (checkpoint.get('meta') or {}).get('cfg')
    if isinstance(saved_cfg, str) and model_cfg is not None:
        try:
            from mmengine.config import Config
            saved_model = Config.fromstring(saved_cfg, '.py').get('model')
            if saved_model is not None:
                config = config_differences(saved_model.to_dict(), _to_dict(model_cfg))
        except Exception as err:  # an unparsable saved config must not block evaluation
            config = [f'  (the saved config could not be parsed: {err})']
    return dict(missing=missing, unexpected=unexpected, shapes=shapes, config=config)


def _to_dict(cfg):
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg


def format_mismatch(report: dict, checkpoint_path: str, config_path: str,
                    limit: int = 8) -> str:
    """A readable account of :func:`compare_checkpoint_with_model`'s report."""
    def some(items):
        items = list(items)
        head = ', '.join(str(i) for i in items[:limit])
        return head + (f' ... ({len(items)} in all)' if len(items) > limit else '')
    lines = [f'checkpoint {checkpoint_path} does not match the model built from {config_path}:']
    if report['missing']:
        lines.append(f"- {len(report['missing'])} model weights are not in the checkpoint (they "
                     f"would stay randomly initialized): {some(report['missing'])}")
    if report['shapes']:
        lines.append('- shape mismatches (checkpoint vs model): ' + some(
            f'{k} {a} vs {b}' for k, a, b in report['shapes']))
    if report['unexpected']:
        lines.append(f"- {len(report['unexpected'])} checkpoint entries the model does not have: "
                     f"{some(report['unexpected'])}")
    if report['config']:
        lines.append("- the checkpoint's saved config differs in:")
        lines.extend(report['config'])
    return '\n'.join(lines)
