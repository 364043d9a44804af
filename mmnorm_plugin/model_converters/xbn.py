"""Convert official XBNBlock ImageNet checkpoints to :class:`XBNResNet`/:class:`XBNResNeXt` keys.

The official ImageNet code (``huangleiBuaa/XBNBlock``, ``models/resnet_XBNBlock_P{1,2,3}.py``,
``models/resnext_XBNBlock_P2.py``) uses torchvision's layout: ``conv1``/``bn1`` stem,
``layer{i}.{j}.conv{k}``/``bn{k}``, ``downsample.0``/``downsample.1``, ``fc``. Every norm is
called ``bn*`` whatever its type, the batch-free ones (GroupNorm) included; they are the norms
*without* running statistics. Its trainer saves either a bare state dict or
``{'model': state_dict, ...}``, with a ``module.`` prefix when the model was wrapped in
(Distributed)DataParallel.

Our backbones keep mmdet's names, which equal torchvision's for the BN parts, and name the BFN
by its type (``gn1`` in the stem, ``layer{i}.{j}.gn{k}`` in the blocks). The conversion is
therefore a rename of the norms that have no running statistics, plus dropping the classifier.
GroupNorm stores no group count, so the checkpoint cannot tell it; the official ImageNet models
were trained with 64 groups (``GN_NG64`` in the file names), our default.
"""
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

__all__ = [
    'unwrap_state_dict', 'convert_official_xbn', 'infer_backbone_cfg', 'checkpoint_key_report',
    'format_key_report'
]

_BLOCK_NORM = re.compile(r'^(layer\d+\.\d+)\.bn(\d)\.(\w+)$')
_STEM_NORM = re.compile(r'^bn1\.(\w+)$')
# The official classifier (fc) and optional BN before it (last_bn) are not part of a backbone.
_CLASSIFIER_PREFIXES = ('fc.', 'last_bn.')


def unwrap_state_dict(checkpoint: Mapping) -> 'OrderedDict[str, torch.Tensor]':
    """Return the model state dict inside an official, mmengine or bare checkpoint.

    Accepts ``{'model': sd}`` (official trainer), ``{'state_dict': sd}`` (mmengine) or a bare
    ``sd``, and strips a ``module.`` prefix shared by all keys (DataParallel).
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    for key in ('model', 'state_dict'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    state_dict = OrderedDict((k, v) for k, v in checkpoint.items() if torch.is_tensor(v))
    if not state_dict:
        raise ValueError('the checkpoint holds no tensors')
    if all(k.startswith('module.') for k in state_dict):
        state_dict = OrderedDict((k[len('module.'):], v) for k, v in state_dict.items())
    return state_dict


def _batch_free_norms(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Prefixes (``'bn1'``, ``'layer1.0.bn2'``) of norms with an affine but no running mean."""
    prefixes = []
    for key in state_dict:
        if key.endswith('.weight'):
            prefix = key[:-len('.weight')]
            is_norm = _STEM_NORM.match(key) or _BLOCK_NORM.match(key)
            if is_norm and f'{prefix}.running_mean' not in state_dict:
                prefixes.append(prefix)
    return prefixes


def _is_bottleneck(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith('layer1.0.conv3.') for k in state_dict)


def convert_official_xbn(checkpoint: Mapping, bfn_abbr: str = 'gn',
                         bfn_position: Optional[str] = None
                         ) -> Tuple['OrderedDict[str, torch.Tensor]', Dict]:
    """Rename an official XBNBlock ImageNet checkpoint to our backbone's keys.

    Args:
        checkpoint: the loaded official file (any form :func:`unwrap_state_dict` accepts).
        bfn_abbr: name stem of our BFN modules, i.e. the abbreviation ``build_norm_layer``
            gives the ``bfn_cfg`` type: 'gn' for GroupNorm (default) and for 'LN'.
        bfn_position: expected position ('P1'/'P2'/'P3'); the detected one must match it.

    Returns:
        ``(state_dict, info)`` with ``info`` = dict(bfn_position, stem_bfn, renamed, dropped).

    Raises:
        ValueError: no batch-free norm found (a plain BN checkpoint loads without conversion),
            BFNs at several positions, or a position different from ``bfn_position``.
    """
    state_dict = unwrap_state_dict(checkpoint)
    bfns = set(_batch_free_norms(state_dict))
    if not bfns:
        raise ValueError('no batch-free norm (a norm without running statistics) found: this '
                         'is not an XBNBlock checkpoint; a BN ResNet loads without conversion')
    indices = sorted({int(_BLOCK_NORM.match(f'{p}.weight').group(2))
                      for p in bfns if p != 'bn1'})
    bottleneck = _is_bottleneck(state_dict)
    if len(indices) != 1:
        raise ValueError(f'expected one batch-free norm per block, found them at norm indices '
                         f'{indices}')
    names = {1: 'P1', 2: 'P2', 3: 'P3'} if bottleneck else {1: 'P2', 2: 'P3'}
    detected = names[indices[0]]
    if bfn_position is not None:
        same = detected == bfn_position or (not bottleneck and {detected, bfn_position} ==
                                            {'P1', 'P2'})
        if not same:
            raise ValueError(f'the checkpoint has its BFN at {detected}, not {bfn_position}')
        detected = bfn_position

    converted, renamed, dropped = OrderedDict(), [], []
    for key, value in state_dict.items():
        if key.startswith(_CLASSIFIER_PREFIXES):
            dropped.append(key)
            continue
        prefix, _, leaf = key.rpartition('.')
        if prefix in bfns:
            new_prefix = re.sub(r'bn(\d)$', bfn_abbr + r'\1', prefix)
            renamed.append((key, f'{new_prefix}.{leaf}'))
            key = f'{new_prefix}.{leaf}'
        converted[key] = value
    info = dict(bfn_position=detected, stem_bfn='bn1' in bfns, renamed=renamed,
                dropped=dropped)
    return converted, info


def infer_backbone_cfg(state_dict: Mapping[str, torch.Tensor], info: Dict) -> Dict:
    """Backbone config (type, depth, base_channels, groups, base_width, BFN args) of a
    converted state dict, read from its tensor shapes and block counts."""
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state_dict
               for m in [re.match(rf'^layer{stage}\.(\d+)\.', k)] if m}
        if not ids:
            break
        blocks.append(max(ids) + 1)
    bottleneck = _is_bottleneck(state_dict)
    depths = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 50 if bottleneck else 34, (3, 4, 23, 3): 101,
              (3, 8, 36, 3): 152}
    if tuple(blocks) not in depths:
        raise ValueError(f'unknown ResNet layout: blocks per stage {blocks}')
    base_channels = state_dict['conv1.weight'].shape[0]
    cfg = dict(type='XBNResNet', depth=depths[tuple(blocks)], base_channels=base_channels,
               bfn_position=info['bfn_position'], stem_bfn=info['stem_bfn'])
    if bottleneck:
        width, in_per_group = state_dict['layer1.0.conv2.weight'].shape[:2]
        groups = width // in_per_group
        if groups > 1:
            cfg.update(type='XBNResNeXt', groups=groups, base_width=width // groups)
    return cfg


def checkpoint_key_report(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                          ignore: Iterable[str] = _CLASSIFIER_PREFIXES) -> Dict[str, List]:
    """Which keys of ``state_dict`` load into ``model`` (nothing is loaded).

    Returns dict(loaded, missing, unexpected, shape_mismatch): ``missing`` are model keys the
    checkpoint lacks (they keep their initialization), ``unexpected`` checkpoint keys the model
    lacks (``ignore`` prefixes, the classifier by default, are left out), ``shape_mismatch``
    ``(key, checkpoint shape, model shape)``. E.g. a BN ResNet-50 into ``XBNResNet`` P2: the
    BFN affines (``gn1.*``, ``layer*.gn2.*``) are missing and the BN they replaced (``bn1.*``,
    ``layer*.bn2.*``) unexpected; everything else loads.
    """
    own = model.state_dict()
    ignore = tuple(ignore)
    report = dict(loaded=[], missing=[], unexpected=[], shape_mismatch=[])
    for key, value in state_dict.items():
        if key not in own:
            if not key.startswith(ignore):
                report['unexpected'].append(key)
        elif own[key].shape != value.shape:
            report['shape_mismatch'].append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            report['loaded'].append(key)
    report['missing'] = [k for k in own if k not in state_dict]
    return report


def format_key_report(report: Dict[str, List], max_keys: int = 20) -> str:
    """Human-readable summary of :func:`checkpoint_key_report`."""
    lines = [f"loaded {len(report['loaded'])} tensors"]
    for field in ('missing', 'unexpected', 'shape_mismatch'):
        keys = report[field]
        lines.append(f'{field}: {len(keys)}')
        lines.extend(f'  {k}' for k in keys[:max_keys])
        if len(keys) > max_keys:
            lines.append(f'  ... {len(keys) - max_keys} more')
    return '\n'.join(lines)
