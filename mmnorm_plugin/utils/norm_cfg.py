"""Config-time validation of every norm config in a model config.

``mmcv.cnn.build_norm_layer`` fails deep inside model construction, without saying which part
of the config is wrong: an unknown type is ``KeyError: 'Cannot find None in registry under
scope name mmdet'``, a missing ``type`` is a bare ``KeyError``, an argument the class does not
take is a plain ``TypeError``. :func:`validate_norm_cfgs` runs before the model is built (our
``tools/train.py`` and ``tools/test.py`` call it) and, for every ``*norm_cfg`` and ``bfn_cfg``
in the model config, names the config path and the fix:

* no ``type`` -> the path and the registered choices;
* unknown type -> the registered choices, the closest one, and the registered name of a class
  name (``'GroupNorm'`` -> "use 'GN'");
* unknown argument -> the arguments the class accepts (``inspect.signature``) and, for a plugin
  norm's argument, which plugin norm takes it (``buffer_num`` is CBN's);
* MABN after a plain conv (warning) -> ``conv_cfg=dict(type='CenConv2d')``.
"""
import difflib
import inspect
import warnings
from typing import Iterator, List, Optional, Tuple

import mmcv.cnn  # noqa: F401  (registers BN, GN, SyncBN, ... in the root MODELS)
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ['registered_norm_types', 'validate_norm_cfgs', 'iter_norm_cfgs', 'norm_cfg_types',
           'accepted_norm_args', 'PLUGIN_NORMS']

_NORM_BASES = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
PLUGIN_NORMS = ('CBN', 'MABN', 'BGN', 'BKN')
# keys whose dict value is a norm config (XBNBlock's batch-free norm is built like one)
_NORM_KEYS = ('norm_cfg', 'bfn_cfg')
# arguments build_norm_layer consumes or injects itself
_BUILDER_ARGS = ('type', 'requires_grad')
_HINT = ("(Plugin norms need custom_imports=dict(imports=['mmnorm_plugin']) in the config.)")


def registered_norm_types(scope: Optional[str] = None) -> List[str]:
    """Names under which a normalization layer is registered, seen from ``scope``.

    ``scope=None`` looks from the current default scope, as ``build_norm_layer`` does.
    """
    return sorted(_registered_norms(scope))


def _registered_norms(scope: Optional[str]) -> dict:
    names = {}
    with MODELS.switch_scope_and_registry(scope) as registry:
        while registry is not None:
            for name, cls in registry.module_dict.items():
                if isinstance(cls, type) and issubclass(cls, _NORM_BASES):
                    names.setdefault(name, cls)
            registry = registry.parent
    return names


def _is_norm_key(key) -> bool:
    return isinstance(key, str) and key.endswith(_NORM_KEYS)


def iter_norm_cfgs(cfg, path: str = '') -> Iterator[Tuple[str, dict]]:
    """Yield ``(dotted.path, dict)`` for every ``*norm_cfg`` / ``bfn_cfg`` dict (typed or not)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            sub = f'{path}.{key}' if path else str(key)
            if _is_norm_key(key) and isinstance(value, dict):
                yield sub, value
            yield from iter_norm_cfgs(value, sub)
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            yield from iter_norm_cfgs(value, f'{path}[{i}]')


def norm_cfg_types(model_cfg) -> List[Tuple[str, str]]:
    """``(path, type)`` for every norm config whose type is a registered name (a string)."""
    return [(path, c['type']) for path, c in iter_norm_cfgs(model_cfg)
            if isinstance(c.get('type'), str)]


def accepted_norm_args(cls: type) -> Optional[List[str]]:
    """Config keys ``build_norm_layer`` can pass to ``cls``; ``None`` if it takes ``**kwargs``."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    # the channel count is passed by build_norm_layer: num_channels= for the exact GroupNorm,
    # positionally (the first argument) for every other class
    names = [n for n in names if n != 'num_channels'] if cls is nn.GroupNorm else names[1:]
    return names + ['requires_grad']


def _class_name_aliases(registered: dict) -> dict:
    """torch/plugin class name -> registered name (``GroupNorm`` -> ``GN``), first one wins."""
    aliases = {}
    for name in sorted(registered, key=len):
        aliases.setdefault(registered[name].__name__, name)
    aliases.setdefault('BatchNorm', 'BN')
    aliases.setdefault('SyncBatchNorm', 'SyncBN')
    aliases.setdefault('InstanceNorm', 'IN')
    return aliases


def _check_args(path: str, norm_type, cls: type, norm_cfg: dict) -> None:
    accepted = accepted_norm_args(cls)
    if accepted is None:
        return
    unknown = [k for k in norm_cfg if k not in accepted and k != 'type']
    if not unknown:
        return
    owners = []
    for arg in unknown:
        takers = [t for t in PLUGIN_NORMS if MODELS.get(t) is not None
                  and arg in (accepted_norm_args(MODELS.get(t)) or ())]
        close = difflib.get_close_matches(arg, accepted, n=1)
        if takers:
            owners.append(f"'{arg}' is an argument of {'/'.join(takers)}")
        elif close:
            owners.append(f"did you mean '{close[0]}'?")
    owner_text = f" ({'; '.join(owners)})" if owners else ''
    name = norm_type if isinstance(norm_type, str) else cls.__name__
    # the registered name is what the user wrote (BKN), the class name may differ
    who = name if name == cls.__name__ else f'{name} (class {cls.__name__})'
    raise TypeError(
        f"norm config at '{path}' (type '{name}') has argument(s) "
        f"{', '.join(repr(k) for k in unknown)} that {who} does not accept"
        f"{owner_text}. Remove them; {name} accepts: {', '.join(accepted)}.")


def _check_mabn_conv(model_cfg, path: str = '') -> None:
    """Warn where a config node gives MABN a plain conv (the method expects CenConv2d)."""
    if isinstance(model_cfg, dict):
        norm_cfg = model_cfg.get('norm_cfg')
        if isinstance(norm_cfg, dict) and norm_cfg.get('type') == 'MABN':
            conv_cfg = model_cfg.get('conv_cfg')
            conv_type = conv_cfg.get('type') if isinstance(conv_cfg, dict) else None
            if conv_type != 'CenConv2d':
                where = f"{path}.conv_cfg" if path else 'conv_cfg'
                warnings.warn(
                    f"MABN at '{path + '.' if path else ''}norm_cfg' follows plain convolutions "
                    f"('{where}' is {conv_cfg!r}). MABN does not center its input and relies "
                    "on weight-centralized convs to keep E[x] close to 0 (arXiv 2001.06838, "
                    f"Sec. 4.3). Fix: set conv_cfg=dict(type='CenConv2d') next to that norm_cfg "
                    "(see configs/mabn).", UserWarning, stacklevel=3)
        for key, value in model_cfg.items():
            _check_mabn_conv(value, f'{path}.{key}' if path else str(key))
    elif isinstance(model_cfg, (list, tuple)):
        for i, value in enumerate(model_cfg):
            _check_mabn_conv(value, f'{path}[{i}]')


def validate_norm_cfgs(model_cfg, scope: Optional[str] = None) -> None:
    """Check every norm config of ``model_cfg`` before the model is built.

    Raises ``KeyError`` (no type, unknown type) or ``TypeError`` (unknown argument) naming the
    config path and the fix; warns (``UserWarning``) for MABN after a plain conv.
    """
    registered = None
    for path, norm_cfg in iter_norm_cfgs(model_cfg):
        if 'type' not in norm_cfg:
            registered = registered or _registered_norms(scope)
            raise KeyError(
                f"norm config at '{path}' has no 'type': {dict(norm_cfg)!r}. Fix: add one, e.g. "
                f"{path.rsplit('.', 1)[-1]}=dict(type='BN', requires_grad=True). Registered "
                f"norm layers: {', '.join(sorted(registered))}.")
        norm_type = norm_cfg['type']
        if isinstance(norm_type, type):  # mmcv >= 2.0.1 accepts the class itself
            _check_args(path, norm_type, norm_type, norm_cfg)
            continue
        if not isinstance(norm_type, str):
            continue
        with MODELS.switch_scope_and_registry(scope) as registry:
            cls = registry.get(norm_type)
        if cls is None:
            registered = registered or _registered_norms(scope)
            alias = _class_name_aliases(registered).get(norm_type)
            if alias is not None:
                hint = f" '{norm_type}' is a class name: use '{alias}'."
            else:
                close = difflib.get_close_matches(norm_type, list(registered), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ''
            raise KeyError(f"Unknown norm type '{norm_type}' at '{path}'.{hint} Registered "
                           f"norm layers: {', '.join(sorted(registered))}. {_HINT}")
        if isinstance(cls, type):
            _check_args(path, norm_type, cls, norm_cfg)
    _check_mabn_conv(model_cfg)
