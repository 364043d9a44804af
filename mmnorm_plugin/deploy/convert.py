"""Convert a trained plugin detector into a plain mmdet detector with BN-cost inference.

In eval mode every norm of this package is a per-channel affine ``y = a * x + b``:

=========  =========================================================================
``CBN``    BN with the running statistics; ``eps_outside_sqrt=True`` normalizes with
           ``sqrt(var) + eps``, which BN reproduces with ``var' = (sqrt(var) + eps)^2 - eps``
``MABN``   no centering: ``running_mean`` is 0 and ``running_var`` is the EMA statistic R of
           the second moment, i.e. ``gamma * x / sqrt(R + eps) + beta`` (already BN's formula)
``BGN``    per-group running statistics (G entries), expanded to the C channels of each group
``BKN``    BN with the running statistics (the EMA of the fused statistics)
=========  =========================================================================

and ``CenConv2d`` is a Conv2d whose weight is centred per filter. :func:`convert_norms_to_bn`
replaces each of them by the ``nn.BatchNorm2d`` / ``nn.Conv2d`` computing the same eval
function, so ``mmcv.cnn.fuse_conv_bn`` then folds every norm into its conv. Do not call
``fuse_conv_bn`` on an unconverted model: it accepts every ``_BatchNorm`` subclass and folds it
with BN's formula, which is wrong for CBN with ``eps_outside_sqrt`` and fails on BGN's G-entry
statistics. (Folding into a ``CenConv2d`` happens to be exact, since a per-filter scale commutes
with per-filter centering, but the result is still a plugin class.)

:func:`convert_config` rewrites the config accordingly (norm types to ``BN``, ``CenConv2d`` to
``Conv2d``, the plugin dropped from ``custom_imports``), so that mmdet without this package
builds a model whose ``state_dict`` is exactly the converted one. The checkpoint keeps the BN
form (mmdet's configs build BN layers, and a fused checkpoint would not match them); folding is
done after loading, as mmdet's own ``tools/analysis_tools/benchmark.py --fuse-conv-bn`` does::

    model = init_detector('deploy.py', 'deploy.pth')   # plain mmdet, no plugin import
    model = mmcv.cnn.fuse_conv_bn(model)

``XBNResNet``/``XBNResNeXt`` keep their GroupNorms (a GN's statistics depend on the sample, so
it cannot fold); the converted config then keeps that backbone type and the plugin import, and
:func:`convert_detector` reports ``needs_plugin=True``.
"""
import copy
import logging
import os.path as osp
from typing import Any, Dict, Optional

import torch
from mmengine.logging import print_log
from torch import nn

from ..models.layers.cen_conv import CenConv2d, fold_cen_conv
from ..norms.base import NormBase

__all__ = ['PLUGIN_NORMS', 'PLUGIN_BACKBONES', 'equivalent_batchnorm', 'convert_norms_to_bn',
           'convert_config', 'convert_detector']

#: norm_cfg type names of this package, all converted to BN
PLUGIN_NORMS = ('CBN', 'MABN', 'BGN', 'BKN', 'SyncCBN', 'SyncBGN', 'SyncBKN')
#: backbones whose GroupNorms have no BN equivalent (they keep the plugin)
PLUGIN_BACKBONES = ('XBNResNet', 'XBNResNeXt')
#: module classes of this package that conversion replaces: every norm (NormBase, the synced
#: variants included) and the centred conv
PLUGIN_CLASSES = (NormBase, CenConv2d)
#: training-only hooks of this package, dropped from the converted config
PLUGIN_HOOKS = ('CBNBurnInHook', 'CompileNormsHook')
_PLUGIN_MODULE = 'mmnorm_plugin'
# norm_cfg keys that mean the same for BN; method-specific ones (buffer_num, num_groups, ...)
# describe training only and are dropped
_BN_KEYS = ('type', 'requires_grad', 'eps', 'momentum', 'affine')


@torch.no_grad()
def equivalent_batchnorm(norm: nn.Module) -> nn.BatchNorm2d:
    """The eval-mode ``nn.BatchNorm2d`` computing ``norm``'s eval forward (same device/dtype)."""
    if not isinstance(norm, NormBase):
        raise TypeError(f'not a plugin norm: {type(norm).__name__}')
    # the statistics with which its eval forward is F.batch_norm (NormBase.eval_statistics)
    mean, var = norm.eval_statistics()
    bn = nn.BatchNorm2d(norm.num_features, eps=norm.eps, momentum=norm.momentum,
                        affine=norm.affine, track_running_stats=True,
                        device=mean.device, dtype=mean.dtype)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    bn.num_batches_tracked.copy_(norm.num_batches_tracked)
    if norm.affine:
        bn.weight.copy_(norm.weight)
        bn.bias.copy_(norm.bias)
        bn.weight.requires_grad_(norm.weight.requires_grad)
        bn.bias.requires_grad_(norm.bias.requires_grad)
    return bn.eval()


def convert_norms_to_bn(module: nn.Module) -> nn.Module:
    """Replace every plugin norm by :func:`equivalent_batchnorm` and every ``CenConv2d`` by its
    centred ``nn.Conv2d``, in place (the module itself is returned converted if it is one).

    The result computes the same eval function; call ``mmcv.cnn.fuse_conv_bn`` on it to fold.
    """
    module = fold_cen_conv(module)
    if isinstance(module, NormBase):
        return equivalent_batchnorm(module)
    for name, child in module.named_children():
        new_child = convert_norms_to_bn(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def _convert_cfg_node(node: Any) -> Any:
    if isinstance(node, dict):
        node_type = node.get('type')
        if node_type in PLUGIN_NORMS:
            out = {k: _convert_cfg_node(v) for k, v in node.items() if k in _BN_KEYS}
            out['type'] = 'BN'
            return out
        if node_type == 'CenConv2d':
            return dict(node, type='Conv2d')
        return {k: _convert_cfg_node(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_convert_cfg_node(v) for v in node)
    return node


def _uses_plugin_backbone(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get('type') in PLUGIN_BACKBONES or any(
            _uses_plugin_backbone(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_uses_plugin_backbone(v) for v in node)
    return False


def convert_config(cfg) -> 'Config':  # noqa: F821
    """The plain-mmdet config of a converted model (a new ``mmengine.Config``).

    Every ``norm_cfg``-style dict of a plugin norm becomes ``dict(type='BN')`` keeping
    ``requires_grad``/``eps``/``momentum``/``affine``; ``CenConv2d`` becomes ``Conv2d``; the
    plugin is removed from ``custom_imports`` unless an XBNBlock backbone still needs it;
    ``load_from``/``resume`` are cleared; pretrained ``init_cfg`` of the backbone is dropped
    (the checkpoint holds every weight).
    """
    from mmengine.config import Config
    data = _convert_cfg_node(copy.deepcopy(cfg.to_dict()))
    needs_plugin = _uses_plugin_backbone(data.get('model', {}))
    imports = data.get('custom_imports')
    if imports is not None:
        names = imports.get('imports', [])
        names = [names] if isinstance(names, str) else list(names)
        if not needs_plugin:
            names = [n for n in names if n.split('.')[0] != _PLUGIN_MODULE]
        if names:
            data['custom_imports'] = dict(imports, imports=names)
        else:
            data.pop('custom_imports')
    hooks = [h for h in data.get('custom_hooks', []) if h.get('type') not in PLUGIN_HOOKS]
    if hooks:
        data['custom_hooks'] = hooks
    else:
        data.pop('custom_hooks', None)
    data['load_from'] = None
    data['resume'] = False
    backbone = data.get('model', {}).get('backbone', {})
    if isinstance(backbone.get('init_cfg'), dict) and backbone['init_cfg'].get(
            'type') == 'Pretrained':
        backbone['init_cfg'] = None
    return Config(data)


def convert_detector(config, checkpoint: str, out_config: str, out_checkpoint: str,
                     device: str = 'cpu', cfg_options: Optional[Dict] = None) -> dict:
    """Convert ``config`` + ``checkpoint`` into ``out_config`` + ``out_checkpoint`` for plain
    mmdet, checking on the way that the plain config builds exactly the converted weights.

    Returns ``dict(model=<converted model, BN form, eval>, config=<Config>,
    needs_plugin=<bool>, converted=<{module type: count}>)``.
    """
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.runner import save_checkpoint

    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    # verified, weights-only, one-line refusals (mmdet's init_detector with a guarded name)
    from ..apis.inference import init_detector_verified
    model = init_detector_verified(cfg, checkpoint, device=device)
    counts: Dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, PLUGIN_CLASSES):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    model = convert_norms_to_bn(model).eval()
    plain_cfg = convert_config(cfg)
    needs_plugin = 'custom_imports' in plain_cfg and any(
        n.split('.')[0] == _PLUGIN_MODULE for n in plain_cfg.custom_imports['imports'])

    # the plain config must build the same modules: same keys, shapes and BN eps
    plain = MODELS.build(plain_cfg.model)
    ours, theirs = model.state_dict(), plain.state_dict()
    missing, unexpected = set(theirs) - set(ours), set(ours) - set(theirs)
    if missing or unexpected:
        raise RuntimeError(f'converted weights do not match the plain config: missing '
                           f'{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}')
    for key, value in ours.items():
        if value.shape != theirs[key].shape:
            raise RuntimeError(f'{key}: converted shape {tuple(value.shape)} vs plain config '
                               f'{tuple(theirs[key].shape)}')
    plain_modules = dict(plain.named_modules())
    for name, m in model.named_modules():
        other = plain_modules.get(name)
        if type(other) is not type(m):
            raise RuntimeError(f'{name}: converted {type(m).__name__} vs plain config '
                               f'{type(other).__name__}')
        if isinstance(m, nn.BatchNorm2d) and other.eps != m.eps:
            raise RuntimeError(f'{name}: eps {m.eps} vs plain config {other.eps}')

    plain_cfg.dump(out_config)
    meta = dict(dataset_meta=getattr(model, 'dataset_meta', None),
                converted_from=dict(config=getattr(cfg, 'filename', None),
                                    checkpoint=osp.abspath(checkpoint), modules=counts))
    save_checkpoint(dict(meta=meta, state_dict=model.state_dict()), out_checkpoint)
    print_log(f'converted {counts} -> BN/Conv2d; wrote {out_config} and {out_checkpoint}'
              + (' (XBNBlock GroupNorms kept: the config still imports mmnorm_plugin)'
                 if needs_plugin else ''), logger='current', level=logging.INFO)
    return dict(model=model, config=plain_cfg, needs_plugin=needs_plugin, converted=counts)
