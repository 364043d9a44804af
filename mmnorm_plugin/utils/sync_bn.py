"""mmengine's ``sync_bn`` switch and the plugin's norms.

``cfg.sync_bn = 'torch'`` (or ``'mmcv'``) makes mmengine's Runner call
``convert_sync_batchnorm`` on the model in distributed mode, which replaces every
``torch.nn.modules.batchnorm._BatchNorm`` instance by ``SyncBatchNorm``. The plugin's norms
subclass ``_BatchNorm`` (so that ``norm_eval``, ``norm_decay_mult`` and BN checkpoints work),
so the conversion would silently turn CBN, MABN, BGN and BKN into plain SyncBN and drop their
state (histories, ring buffers, groups).

Two guards, one table:

* :data:`SYNC_VARIANTS` maps each plugin norm type to the registered name of its synced
  variant, or ``None`` while there is none. A norm with a variant is converted to it, one
  without is refused by our ``tools/train.py`` (:func:`check_sync_bn_cfg`, config level,
  before anything is built) and kept unconverted with a loud warning on mmdet's shipped
  ``tools/train.py`` path (:func:`guarded_convert_sync_batchnorm`, installed into mmengine's
  Runner when the plugin is imported, i.e. through ``custom_imports``).
* A synced variant class plugs in by being registered in mmengine's root ``MODELS`` and
  providing ``classmethod from_unsynced(module) -> nn.Module`` that copies parameters and
  state; filling its entry in :data:`SYNC_VARIANTS` then turns refusal into conversion
  everywhere, with no other change here.

Everything that is not a plugin norm (``BN``, ``GN``...) is converted by mmengine as before.
"""
import warnings
from typing import Dict, Iterable, List, Optional, Tuple

from mmengine.registry import MODELS
from torch import nn

__all__ = ['SYNC_VARIANTS', 'check_sync_bn_cfg', 'guarded_convert_sync_batchnorm',
           'install_sync_bn_guard', 'plugin_norm_modules']

#: plugin norm type -> registered type of its cross-GPU synced variant (None: no variant yet)
SYNC_VARIANTS: Dict[str, Optional[str]] = {'CBN': None, 'MABN': None, 'BGN': None, 'BKN': None}


def _why_unsynced(norm_type: str) -> str:
    if norm_type == 'MABN':
        return 'MABN keeps per-GPU moving averages by design'
    return f'{norm_type} has no synced variant yet'


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


def plugin_norm_modules(model: nn.Module) -> List[Tuple[str, str, nn.Module]]:
    """``(qualified name, registered type, module)`` of every plugin norm in ``model``."""
    classes = [(t, MODELS.get(t)) for t in SYNC_VARIANTS]
    found = []
    for name, module in model.named_modules():
        for norm_type, cls in classes:
            if cls is not None and type(module) is cls:
                found.append((name, norm_type, module))
                break
    return found


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
    if any(name == '' for name, _, _ in ours):  # the model itself is one plugin norm
        ours = []
    kept, placed = [], []
    for name, norm_type, norm in ours:
        variant = SYNC_VARIANTS[norm_type]
        if variant is not None:
            placed.append((name, MODELS.get(variant).from_unsynced(norm)))
        else:
            placed.append((name, norm))
            kept.append((name, norm_type, norm))
        # out of the tree while mmengine converts: a synced variant is a _BatchNorm too
        _set_child(module, name, nn.Identity())
    module = _convert(module, implementation)
    for name, norm in placed:
        _set_child(module, name, norm)
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
        try:
            from mmengine.logging import print_log
            import logging
            print_log(message, logger='current', level=logging.WARNING)
        except Exception:  # logging must never break model wrapping
            pass
    return module


def install_sync_bn_guard() -> None:
    """Make mmengine's Runner (and FlexibleRunner's DDP strategy) use the guarded conversion.

    Only the *callers'* references are replaced; ``mmengine.model.utils`` keeps its own
    recursive function, which the guard delegates to. Idempotent.
    """
    import importlib
    for module_name in ('mmengine.runner.runner', 'mmengine._strategy.distributed'):
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover (optional deps of the strategies)
            continue
        current = getattr(module, 'convert_sync_batchnorm', None)
        if current is None or getattr(current, '_mmnorm_guard', False):
            continue

        def guarded(model, implementation='torch', _convert=current):
            return guarded_convert_sync_batchnorm(model, implementation, _convert)

        guarded._mmnorm_guard = True
        guarded.__doc__ = guarded_convert_sync_batchnorm.__doc__
        setattr(module, 'convert_sync_batchnorm', guarded)
