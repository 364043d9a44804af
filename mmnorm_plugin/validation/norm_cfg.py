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

:func:`install_build_validation` (run once when the plugin is imported) makes every model build
run the same check: mmdet's ``init_detector``, ``DetInferencer``, mmdet's own
``tools/train.py``/``test.py`` (the Runner) and a bare ``MODELS.build`` all report a bad norm
config with these messages instead of mmcv's. A group count that does not divide a layer's
width is only known while building; that error gets the config paths that set it.
"""
import contextvars
import difflib
import functools
import inspect
import warnings
from typing import Callable, Iterator, List, Optional, Tuple

import mmcv.cnn  # noqa: F401  (registers BN, GN, SyncBN, ... in the root MODELS)
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ['registered_norm_types', 'validate_norm_cfgs', 'iter_norm_cfgs', 'norm_cfg_types',
           'accepted_norm_args', 'install_build_validation', 'uninstall_build_validation',
           'PLUGIN_NORMS']

_NORM_BASES = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
PLUGIN_NORMS = ('CBN', 'MABN', 'BGN', 'BKN')
# keys whose dict value is a norm config (XBNBlock's batch-free norm is built like one)
_NORM_KEYS = ('norm_cfg', 'bfn_cfg')
# ... except the image normalization of mmdet's ReID/tracking configs (mean/std, no layer):
# checked on every build, a false alarm there would break a valid mmdet config
_NOT_NORM_KEYS = ('img_norm_cfg', )
# arguments build_norm_layer consumes or injects itself
_BUILDER_ARGS = ('type', 'requires_grad')
_HINT = ("(Plugin norms need custom_imports=dict(imports=['mmnorm_plugin']) in the config.)")


# MABN warnings already given: a model checked by our tool is checked again at each build of it
# (the checkpoint check, the Runner), where the same warning would only repeat itself
_WARNED = set()


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


def _registered_in_another_scope(name: str) -> bool:
    pending = [MODELS]
    while pending:
        registry = pending.pop()
        if name in registry.module_dict:
            return True
        pending.extend(registry.children.values())
    return False


def _is_norm_key(key) -> bool:
    return isinstance(key, str) and key.endswith(_NORM_KEYS) and not key.endswith(_NOT_NORM_KEYS)


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
    typos = 0
    for arg in unknown:
        takers = [t for t in PLUGIN_NORMS if MODELS.get(t) is not None
                  and arg in (accepted_norm_args(MODELS.get(t)) or ())]
        close = difflib.get_close_matches(arg, accepted, n=1)
        if takers:
            owners.append(f"'{arg}' is an argument of {'/'.join(takers)}")
        elif close:
            owners.append(f"did you mean '{close[0]}'?")
            typos += 1
    owner_text = f" ({'; '.join(owners)})" if owners else ''
    name = norm_type if isinstance(norm_type, str) else cls.__name__
    # the registered name is what the user wrote (BKN), the class name may differ
    who = name if name == cls.__name__ else f'{name} (class {cls.__name__})'
    fix = 'Remove them'
    if typos < len(unknown):
        # A config that swaps the type of an inherited norm_cfg keeps the base's other keys
        # (mmengine merges dicts key by key), and deleting the key in the child is not
        # possible: the fix in a config is to replace the whole dict.
        key = path.rsplit('.', 1)[-1]
        type_text = repr(name) if isinstance(norm_type, str) else cls.__name__
        fix += (f"; if they come from a _base_ config (dicts are merged key by key), replace "
                f"the inherited dict: {key}=dict(_delete_=True, type={type_text}, ...)")
    raise TypeError(
        f"norm config at '{path}' (type '{name}') has argument(s) "
        f"{', '.join(repr(k) for k in unknown)} that {who} does not accept"
        f"{owner_text}. {fix}. {name} accepts: {', '.join(accepted)}.")


def _mabn_conv_warnings(model_cfg, path: str = '') -> Iterator[str]:
    """Where a config node gives MABN a plain conv (the method expects CenConv2d): the text."""
    if isinstance(model_cfg, dict):
        norm_cfg = model_cfg.get('norm_cfg')
        if isinstance(norm_cfg, dict) and norm_cfg.get('type') == 'MABN':
            conv_cfg = model_cfg.get('conv_cfg')
            conv_type = conv_cfg.get('type') if isinstance(conv_cfg, dict) else None
            if conv_type != 'CenConv2d':
                where = f"{path}.conv_cfg" if path else 'conv_cfg'
                yield (
                    f"MABN at '{path + '.' if path else ''}norm_cfg' follows plain convolutions "
                    f"('{where}' is {conv_cfg!r}). MABN does not center its input and relies "
                    "on weight-centralized convs to keep E[x] close to 0 (arXiv 2001.06838, "
                    f"Sec. 4.3). Fix: set conv_cfg=dict(type='CenConv2d') next to that norm_cfg "
                    "(see configs/mabn).")
        for key, value in model_cfg.items():
            yield from _mabn_conv_warnings(value, f'{path}.{key}' if path else str(key))
    elif isinstance(model_cfg, (list, tuple)):
        for i, value in enumerate(model_cfg):
            yield from _mabn_conv_warnings(value, f'{path}[{i}]')


def validate_norm_cfgs(model_cfg, scope: Optional[str] = None) -> None:
    """Check every norm config of ``model_cfg`` before the model is built.

    Raises ``KeyError`` (no type, unknown type) or ``TypeError`` (unknown argument) naming the
    config path and the fix; warns (``UserWarning``) for MABN after a plain conv.
    """
    _check_norm_cfgs(model_cfg, scope)
    for message in _mabn_conv_warnings(model_cfg):
        _WARNED.add(message)
        warnings.warn(message, UserWarning, stacklevel=2)


def _check_norm_cfgs(model_cfg, scope: Optional[str]) -> None:
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
        if cls is None and _registered_in_another_scope(norm_type):
            # e.g. a norm of mmpretrain's registry under a 'mmpretrain.X' backbone: which
            # scope builds it is decided deeper down; whether it resolves is not ours to judge
            continue
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


# True while a model is being built through a validating build function: the nested builds
# (backbone, neck, heads) are parts of a model cfg that was checked as a whole.
_BUILDING = contextvars.ContextVar('mmnorm_building', default=False)


def _group_count_paths(err: Exception, model_cfg) -> List[str]:
    """Config paths whose norm sets the group count that ``err`` (BGN's divisibility error,
    ``num_groups=G does not divide num_features=C``) complains about."""
    message = str(err)
    paths = []
    for path, norm_cfg in iter_norm_cfgs(model_cfg):
        norm_type = norm_cfg.get('type')
        if isinstance(norm_type, str):
            norm_type = MODELS.get(norm_type)
        if not isinstance(norm_type, type):
            continue
        try:
            param = inspect.signature(norm_type).parameters.get('num_groups')
        except (TypeError, ValueError):
            continue
        if param is None:
            continue
        groups = norm_cfg.get('num_groups', param.default)
        if f'num_groups={groups} does not divide' in message:
            paths.append(f"'{path}'" + ('' if 'num_groups' in norm_cfg else
                                        f' (num_groups={groups}, the default)'))
    return paths


def _validating(build_func: Callable) -> Callable:
    @functools.wraps(build_func)
    def build(cfg, *args, **kwargs):
        if _BUILDING.get() or not isinstance(cfg, (dict, list)):
            return build_func(cfg, *args, **kwargs)
        # build_from_cfg builds under the cfg's _scope_ (else the default scope), and so does
        # build_norm_layer inside it
        _check_norm_cfgs(cfg, cfg.get('_scope_') if isinstance(cfg, dict) else None)
        for message in _mabn_conv_warnings(cfg):
            if message not in _WARNED:
                _WARNED.add(message)
                warnings.warn(message, UserWarning, stacklevel=3)
        token = _BUILDING.set(True)
        try:
            return build_func(cfg, *args, **kwargs)
        except ValueError as err:
            paths = _group_count_paths(err, cfg)
            if not paths:
                raise
            # same type, same traceback: only the config paths are added
            raise ValueError(f"{err}. Set at {', '.join(paths)} in the model config."
                             ).with_traceback(err.__traceback__) from None
        finally:
            _BUILDING.reset(token)

    build._mmnorm_validating = True
    return build


def install_build_validation() -> None:
    """Run :func:`validate_norm_cfgs` on the config of every model built from mmengine's root
    ``MODELS`` or a child registry that already exists (mmdet's), once per outermost build.

    ``Registry.build`` calls the registry's ``build_func`` attribute, which a child copies from
    its parent when it is created: wrapping that attribute catches the Runner (root
    ``MODELS``), mmdet's ``init_detector``/``DetInferencer``/``MODELS.build`` (mmdet's
    ``MODELS``) and registries created later, without patching ``Registry`` for every other
    registry. A valid config builds exactly as before; the check walks the config dict once
    per model (nested builds are skipped). Idempotent.
    """
    model_build = MODELS.build_func
    if getattr(model_build, '_mmnorm_validating', False):
        return
    validating = _validating(model_build)
    pending = [MODELS]
    while pending:
        registry = pending.pop()
        pending.extend(registry.children.values())
        # a registry with a build function of its own keeps it
        if registry.build_func is model_build:
            registry.build_func = validating


def uninstall_build_validation() -> None:
    """Undo :func:`install_build_validation`: every registry under mmengine's root ``MODELS``
    whose build function is the validating wrapper (children created since copied it) gets the
    function it wrapped back. Idempotent."""
    pending = [MODELS]
    while pending:
        registry = pending.pop()
        pending.extend(registry.children.values())
        build = registry.build_func
        if getattr(build, '_mmnorm_validating', False):
            registry.build_func = build.__wrapped__
