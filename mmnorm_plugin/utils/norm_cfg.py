"""Config-time validation of every ``norm_cfg`` in a model config.

``mmcv.cnn.build_norm_layer`` reports an unknown norm type as
``KeyError: 'Cannot find None in registry under scope name mmdet'`` from deep inside model
construction. :func:`validate_norm_cfgs` runs before the model is built (our ``tools/train.py``
and ``tools/test.py`` call it) and names the offending config path, the registered choices and
the closest match.
"""
import difflib
from typing import Iterator, List, Optional, Tuple

import mmcv.cnn  # noqa: F401  (registers BN, GN, SyncBN, ... in the root MODELS)
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ['registered_norm_types', 'validate_norm_cfgs', 'iter_norm_cfgs']

_NORM_BASES = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def registered_norm_types(scope: Optional[str] = None) -> List[str]:
    """Names under which a normalization layer is registered, seen from ``scope``.

    ``scope=None`` looks from the current default scope, as ``build_norm_layer`` does.
    """
    names = set()
    with MODELS.switch_scope_and_registry(scope) as registry:
        while registry is not None:
            for name, cls in registry.module_dict.items():
                if isinstance(cls, type) and issubclass(cls, _NORM_BASES):
                    names.add(name)
            registry = registry.parent
    return sorted(names)


def iter_norm_cfgs(cfg, path: str = '') -> Iterator[Tuple[str, dict]]:
    """Yield ``(dotted.path, dict)`` for every ``*norm_cfg`` dict with a string ``type``."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            sub = f'{path}.{key}' if path else str(key)
            if (isinstance(key, str) and key.endswith('norm_cfg') and isinstance(value, dict)
                    and isinstance(value.get('type'), str)):
                yield sub, value
            yield from iter_norm_cfgs(value, sub)
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            yield from iter_norm_cfgs(value, f'{path}[{i}]')


def validate_norm_cfgs(model_cfg, scope: Optional[str] = None) -> None:
    """Raise ``KeyError`` naming the path and the registered choices for an unknown norm type."""
    for path, norm_cfg in iter_norm_cfgs(model_cfg):
        norm_type = norm_cfg['type']
        with MODELS.switch_scope_and_registry(scope) as registry:
            if registry.get(norm_type) is not None:
                continue
        choices = registered_norm_types(scope)
        close = difflib.get_close_matches(norm_type, choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ''
        raise KeyError(f"Unknown norm type '{norm_type}' at '{path}'.{hint} Registered norm "
                       f"layers: {', '.join(choices)}. (Plugin norms need "
                       "custom_imports=dict(imports=['mmnorm_plugin']) in the config.)")
