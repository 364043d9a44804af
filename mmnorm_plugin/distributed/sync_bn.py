"""mmengine's ``sync_bn`` switch and the plugin's norms.

``cfg.sync_bn = 'torch'`` (or ``'mmcv'``) makes mmengine's Runner call
``convert_sync_batchnorm`` on the model in distributed mode, which replaces every
``torch.nn.modules.batchnorm._BatchNorm`` instance by ``SyncBatchNorm``; without a process
group it calls ``revert_sync_batchnorm`` (so do mmdet's ``init_detector`` and
``DetInferencer``), which turns ``SyncBatchNorm`` back into BN. The plugin's norms subclass
``_BatchNorm`` (so that ``norm_eval``, ``norm_decay_mult`` and BN checkpoints work), so the
conversion would silently turn CBN, MABN, BGN and BKN into plain SyncBN and drop their state
(windows, ring buffers, groups).

When the plugin is imported (``custom_imports``, or our ``tools/train.py``), both functions
are replaced, in the modules that call them, by guarded versions driven by one table,
:data:`SYNC_VARIANTS` (plugin norm type -> registered type of its synced variant, or None):

* ``sync_bn`` converts CBN -> SyncCBN, BGN -> SyncBGN, BKN -> SyncBKN with the variant's
  ``from_unsynced`` (same parameters, state and hyperparameters); synced variants already in
  the model (``norm_cfg=dict(type='SyncCBN')``) are kept. MABN has no synced variant (see
  :data:`NO_SYNC_REASON`): our ``tools/train.py`` refuses ``sync_bn`` with MABN before anything
  is built (:func:`check_sync_bn_cfg`); mmdet's own ``tools/train.py`` keeps MABN
  unconverted with a loud warning (:func:`guarded_convert_sync_batchnorm`).
* the revert turns synced variants back into their unsynced layer (``to_unsynced``), which
  they equal outside a process group anyway.

Everything that is not a plugin norm (``BN``, ``GN``...) is converted by mmengine as before.
A synced variant plugs in by being registered in mmengine's root ``MODELS``, providing
``classmethod from_unsynced(module, process_group=None)`` and ``to_unsynced()``, and being
named in :data:`SYNC_VARIANTS`.
"""
import warnings
from collections import Counter
from typing import Dict, Iterable, List, Optional, Tuple

from mmengine.registry import MODELS
from torch import nn

__all__ = ['SYNC_VARIANTS', 'NO_SYNC_REASON', 'check_sync_bn_cfg',
           'guarded_convert_sync_batchnorm', 'guarded_revert_sync_batchnorm',
           'install_sync_bn_guard', 'uninstall_sync_bn_guard', 'plugin_norm_modules',
           'synced_norm_modules']

#: plugin norm type -> registered type of its cross-GPU synced variant (None: none)
SYNC_VARIANTS: Dict[str, Optional[str]] = {
    'CBN': 'SyncCBN', 'BGN': 'SyncBGN', 'BKN': 'SyncBKN', 'MABN': None}

#: why a plugin norm has no synced variant
NO_SYNC_REASON: Dict[str, str] = {
    'MABN': ('MABN keeps per-GPU moving averages by design: its forward and backward '
             'statistics are already averages over many iterations, and a synced form (pooling '
             'E[x^2] and the gradient statistic Psi over GPUs, two all-reduces of C numbers) '
             'would be an estimator the paper neither derives nor measures'),
}


def _why_unsynced(norm_type: str) -> str:
    return NO_SYNC_REASON.get(norm_type, f'{norm_type} has no synced variant')


def check_sync_bn_cfg(cfg, norm_types: Iterable[Tuple[str, str]]) -> None:
    """Refuse ``cfg.sync_bn`` when the model uses a plugin norm without a synced variant.

    ``norm_types`` is ``(config path, type)`` for every norm config of the model.
    """
    sync_bn = cfg.get('sync_bn', None)
    if not sync_bn:
        return
    unsynced = [(path, t) for path, t in norm_types
                if t in SYNC_VARIANTS and SYNC_VARIANTS[t] is None]
    if not unsynced:
        return
    where = ', '.join(f"'{path}' ({t})" for path, t in unsynced[:6])
    more = f' and {len(unsynced) - 6} more' if len(unsynced) > 6 else ''
    reasons = '; '.join(sorted({_why_unsynced(t) for _, t in unsynced}))
    raise ValueError(
        f"cfg.sync_bn={sync_bn!r} converts every _BatchNorm subclass into SyncBatchNorm, which "
        f"would silently replace the plugin norms at {where}{more} by plain SyncBN and drop "
        f"their state ({reasons}). Fix: remove sync_bn from the config (the plugin norms then "
        "compute statistics per GPU, as they are designed to), or use type='SyncBN' in the "
        "norm_cfg of the layers you want synced across GPUs.")


def _modules_of_types(model: nn.Module, types) -> List[Tuple[str, str, nn.Module]]:
    classes = [(t, MODELS.get(t)) for t in types]
    found = []
    for name, module in model.named_modules():
        for norm_type, cls in classes:
            if cls is not None and type(module) is cls:
                found.append((name, norm_type, module))
                break
    return found


def plugin_norm_modules(model: nn.Module) -> List[Tuple[str, str, nn.Module]]:
    """``(qualified name, registered type, module)`` of every (unsynced) plugin norm."""
    return _modules_of_types(model, SYNC_VARIANTS)


def synced_norm_modules(model: nn.Module) -> List[Tuple[str, str, nn.Module]]:
    """``(qualified name, registered type, module)`` of every synced plugin norm."""
    return _modules_of_types(model, [v for v in SYNC_VARIANTS.values() if v is not None])


def _set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def guarded_convert_sync_batchnorm(module: nn.Module, implementation: str = 'torch',
                                   _convert=None) -> nn.Module:
    """mmengine's ``convert_sync_batchnorm`` that keeps (or converts) the plugin norms.

    Plugin norms with a synced variant become that variant (``from_unsynced``); those without
    one are taken out of the tree while mmengine converts the rest, then put back unchanged,
    with a warning that names them.
    """
    if _convert is None:
        from mmengine.model.utils import convert_sync_batchnorm as _convert
    ours = plugin_norm_modules(module)
    synced = synced_norm_modules(module)
    if synced and synced[0][0] == '':  # the model itself is a synced norm
        return module
    if ours and ours[0][0] == '':  # the model itself is a plugin norm
        variant = SYNC_VARIANTS[ours[0][1]]
        return MODELS.get(variant).from_unsynced(module) if variant else module
    kept, placed = [], [(name, norm) for name, _, norm in synced]
    converted = Counter()
    for name, norm_type, norm in ours:
        variant = SYNC_VARIANTS[norm_type]
        if variant is not None:
            placed.append((name, MODELS.get(variant).from_unsynced(norm)))
            converted[f'{norm_type} -> {variant}'] += 1
        else:
            placed.append((name, norm))
            kept.append((name, norm_type, norm))
    module = _without(module, placed, lambda m: _convert(m, implementation))
    if converted:
        _log(f'mmnorm_plugin: cfg.sync_bn={implementation!r} converted '
             + ', '.join(f'{n} {pair}' for pair, n in sorted(converted.items()))
             + ' (statistics pooled over the process group); other BatchNorm layers: '
             "mmengine's conversion.")
    if kept:
        types = sorted({t for _, t, _ in kept})
        names = ', '.join(name for name, _, _ in kept[:5])
        more = f' ... ({len(kept)} in all)' if len(kept) > 5 else ''
        message = (
            f"mmnorm_plugin: cfg.sync_bn={implementation!r} would turn {'/'.join(types)} into "
            f"plain SyncBatchNorm and drop their state; these layers were kept UNCONVERTED and "
            f"compute statistics per GPU: {names}{more}. Other BatchNorm layers were converted. "
            "Remove sync_bn from the config to silence this (our tools/train.py refuses the "
            "combination).")
        warnings.warn(message, UserWarning, stacklevel=2)
        _log(message, warning=True)
    return module


def _log(message: str, warning: bool = False) -> None:
    try:
        import logging
        from mmengine.logging import print_log
        print_log(message, logger='current', level=logging.WARNING if warning else logging.INFO)
    except Exception:  # logging must never break model wrapping
        pass


def _without(module: nn.Module, placed: List[Tuple[str, nn.Module]], convert) -> nn.Module:
    """``convert(module)`` with the plugin norms out of the tree, then ``placed`` put back.

    mmengine's functions recurse into every child and replace ``_BatchNorm``/``SyncBatchNorm``
    instances; ours (all ``_BatchNorm`` subclasses) must not be seen by them.
    """
    for name, _ in placed:
        _set_child(module, name, nn.Identity())
    module = convert(module)
    for name, norm in placed:
        _set_child(module, name, norm)
    return module


def guarded_revert_sync_batchnorm(module: nn.Module, _revert=None) -> nn.Module:
    """mmengine's ``revert_sync_batchnorm`` that also reverts the plugin's synced norms.

    SyncCBN/SyncBGN/SyncBKN become CBN/BGN/BKN (``to_unsynced``: same parameters and state);
    plugin norms are left alone; ``SyncBatchNorm`` is reverted by mmengine as before.
    """
    if _revert is None:
        from mmengine.model.utils import revert_sync_batchnorm as _revert
    synced = synced_norm_modules(module)
    if synced and synced[0][0] == '':  # the model itself is a synced norm
        return module.to_unsynced()
    placed = [(name, norm.to_unsynced()) for name, _, norm in synced]
    if placed:
        _log(f'mmnorm_plugin: reverted {len(placed)} synced plugin norm(s) to their per-GPU '
             'form (identical outside a process group).')
    placed += [(name, norm) for name, _, norm in plugin_norm_modules(module)]
    return _without(module, placed, _revert)


# module -> the names in it that the guard replaces
_CALLERS = {
    'mmengine.runner.runner': ('convert_sync_batchnorm', 'revert_sync_batchnorm'),
    'mmengine._strategy.distributed': ('convert_sync_batchnorm', ),
    'mmengine._strategy.single_device': ('revert_sync_batchnorm', ),
    'mmdet.apis.inference': ('revert_sync_batchnorm', ),
    'mmdet.apis.det_inferencer': ('revert_sync_batchnorm', ),
}


def install_sync_bn_guard() -> None:
    """Make mmengine's Runner and strategies and mmdet's inference APIs use the guarded
    conversion and revert.

    Only the *callers'* references are replaced; ``mmengine.model.utils`` keeps its own
    recursive functions, which the guards delegate to. Idempotent.
    """
    import importlib
    for module_name, names in _CALLERS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover (optional deps of the strategies)
            continue
        for name in names:
            current = getattr(module, name, None)
            if current is None or getattr(current, '_mmnorm_guard', False):
                continue
            if name == 'convert_sync_batchnorm':
                def guarded(model, implementation='torch', _convert=current):
                    return guarded_convert_sync_batchnorm(model, implementation, _convert)
                guarded.__doc__ = guarded_convert_sync_batchnorm.__doc__
            else:
                def guarded(model, _revert=current):
                    return guarded_revert_sync_batchnorm(model, _revert)
                guarded.__doc__ = guarded_revert_sync_batchnorm.__doc__
            guarded._mmnorm_guard = True
            guarded.__wrapped__ = current
            setattr(module, name, guarded)


def uninstall_sync_bn_guard() -> None:
    """Undo :func:`install_sync_bn_guard`: each caller gets back the function the guard
    replaced. Idempotent."""
    import sys
    for module_name, names in _CALLERS.items():
        module = sys.modules.get(module_name)
        for name in names if module is not None else ():
            current = getattr(module, name, None)
            if getattr(current, '_mmnorm_guard', False):
                setattr(module, name, current.__wrapped__)
