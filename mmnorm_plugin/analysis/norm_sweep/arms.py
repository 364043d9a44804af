"""Arms of a sweep: the norm presets, where a config's norms are, and the config of one
arm-seed derived from the user's (only the norm and the batch, with the LR scaled linearly,
change; the seed fixes initialization and data order)."""
import copy
import json
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .records import arm_key

__all__ = ['NORM_PRESETS', 'PARTS', 'Arm', 'parse_norm', 'norm_sites', 'arm_config']

PARTS = ('backbone', 'neck', 'heads')

#: name -> how the arm changes the model. ``norm_cfg``/``conv_cfg``: put at every norm site of
#: the arm's parts (``None``: no norm). ``backbone``: 'XBN' swaps ResNet/ResNeXt for the XBNBlock
#: backbone (its own norms: the config's BN, live, plus GroupNorm in each block) and puts
#: ``norm_cfg`` in neck and heads. ``frozen_backbone``: the backbone's BN frozen (statistics and
#: affine), ``norm_cfg`` in neck and heads (the fine-tune setting's "no norm" baseline with None).
#: A user spec may also give ``custom_hooks`` (appended to the config's, e.g. PreciseNormHook).
NORM_PRESETS: Dict[str, Dict] = {
    'BN': dict(norm_cfg=dict(type='BN', requires_grad=True)),
    'SyncBN': dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
    'GN': dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    'CBN': dict(norm_cfg=dict(type='CBN', requires_grad=True)),
    'MABN': dict(norm_cfg=dict(type='MABN', requires_grad=True),
                 conv_cfg=dict(type='CenConv2d')),
    'BGN': dict(norm_cfg=dict(type='BGN', num_groups=32, requires_grad=True)),
    'BKN': dict(norm_cfg=dict(type='BKN', requires_grad=True)),
    'XBN': dict(backbone='XBN', norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    'FrozenBN': dict(frozen_backbone=True, norm_cfg=None),
}
_SPEC_KEYS = {'norm_cfg', 'conv_cfg', 'backbone', 'frozen_backbone', 'parts', 'custom_hooks'}
_XBN_BACKBONES = {'ResNet': 'XBNResNet', 'ResNeXt': 'XBNResNeXt'}
# necks that take norm_cfg/conv_cfg although configs usually leave them out
_NECKS_WITH_NORM = {'FPN', 'PAFPN', 'ChannelMapper', 'HRFPN', 'NASFPN', 'NASFCOS_FPN', 'RFP',
                    'CTResNetNeck', 'YOLOV3Neck', 'DilatedEncoder', 'SSDNeck', 'FPG'}


class Arm:
    """One norm at one number of images per batch: ``name`` reads ``CBN@1``."""

    def __init__(self, norm: str, spec: Dict, batch: int):
        self.norm, self.spec, self.batch = norm, spec, int(batch)
        self.name = f'{norm}@{self.batch}'
        arm_key(self.name)  # the name becomes file names: refuse any other shape now

    def __repr__(self):
        return f'Arm({self.name})'


def parse_norm(text: str, groups: Optional[int] = None) -> Tuple[str, Dict]:
    """``'CBN'`` (a preset) or ``'NAME={json spec}'``; ``groups`` replaces the group count of
    every GroupNorm-like preset (the tiny models' widths 16..128 need 8 instead of 32)."""
    if '=' in text:
        name, _, body = text.partition('=')
        try:
            spec = json.loads(body)
        except json.JSONDecodeError as err:
            raise ValueError(f'--norm {name}: the spec is not JSON ({err}): {body!r}') from None
        if not isinstance(spec, dict) or not set(spec) <= _SPEC_KEYS or not spec:
            raise ValueError(f'--norm {name}: a spec is a JSON object with keys from '
                             f'{sorted(_SPEC_KEYS)}, got {body!r}')
        return name.strip(), spec
    if text not in NORM_PRESETS:
        import difflib
        close = difflib.get_close_matches(text, NORM_PRESETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        raise ValueError(f'unknown norm {text!r}{hint}; presets: {sorted(NORM_PRESETS)}, or '
                         'NAME=\'{"norm_cfg": {...}}\'')
    spec = copy.deepcopy(NORM_PRESETS[text])
    norm_cfg = spec.get('norm_cfg')
    if groups is not None and norm_cfg and 'num_groups' in norm_cfg:
        norm_cfg['num_groups'] = int(groups)
    return text, spec


def _path_str(path: Sequence) -> str:
    out = ''
    for key in path:
        out += f'[{key}]' if isinstance(key, int) else (f'.{key}' if out else str(key))
    return out


def _find_norm_sites(node, path) -> List[Tuple]:
    sites = []
    if isinstance(node, dict):
        if 'norm_cfg' in node:
            sites.append(tuple(path))
        for key, value in node.items():
            if key not in ('norm_cfg', 'conv_cfg', 'init_cfg', 'train_cfg', 'test_cfg',
                           'loss_cls', 'loss_bbox', 'loss_mask', 'anchor_generator',
                           'bbox_coder'):
                sites += _find_norm_sites(value, path + [key])
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            sites += _find_norm_sites(value, path + [i])
    return sites


def norm_sites(model: Dict, parts: Iterable[str]) -> Dict[str, List[Tuple]]:
    """Where each part's norm configs are, as paths from ``model``.

    ``backbone``: the backbone dict. ``neck``: each neck (a FPN-like neck gets a site even when
    the config leaves ``norm_cfg`` out, since it takes one). ``heads``: every dict under a
    ``*head`` entry of the model that has a ``norm_cfg`` key (a config opts a head in with
    ``norm_cfg=None``; heads without one, such as the RPN head, have no norm to swap).
    """
    out = {}
    for part in parts:
        if part not in PARTS:
            raise ValueError(f'unknown part {part!r}; parts: {PARTS}')
        if part == 'backbone':
            out[part] = [('backbone',)] if isinstance(model.get('backbone'), dict) else []
        elif part == 'neck':
            neck = model.get('neck')
            necks = [(('neck',), neck)] if isinstance(neck, dict) else [
                (('neck', i), n) for i, n in enumerate(neck or []) if isinstance(n, dict)]
            out[part] = [p for p, n in necks
                         if 'norm_cfg' in n or n.get('type') in _NECKS_WITH_NORM]
        else:
            out[part] = [site for key, value in model.items() if key.endswith('head')
                         for site in _find_norm_sites(value, [key])]
    return out


def arm_config(config: str, arm: Arm, seed: int, parts: Sequence[str] = PARTS,
               cfg_options: Optional[Dict] = None, val_interval: Optional[int] = None):
    """The config of one arm-seed and the options that made it from ``config``.

    Returns ``(cfg, options)``: ``options`` maps dotted paths to the values set (JSON-able),
    recorded with the results. The LR is ``lr * batch / base`` with ``base`` the config's
    ``auto_scale_lr.base_batch_size`` (else its own batch size); ``auto_scale_lr`` is then
    switched off so that nothing scales it twice. Validation during training is switched off
    (``tools/test.py`` evaluates the final checkpoint once) unless ``val_interval`` asks for a
    learning curve: an evaluation every ``val_interval`` epochs (iterations for an
    iteration-based loop), recorded per point by :func:`run_arm`.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(copy.deepcopy(cfg_options))
    model = cfg.model
    spec = arm.spec
    arm_parts = list(spec.get('parts', parts))
    options: Dict[str, object] = {}
    backbone = model.get('backbone', {})
    if spec.get('backbone') == 'XBN':
        if backbone.get('type') not in _XBN_BACKBONES:
            raise ValueError(f'{arm.name}: the XBN arm swaps a ResNet/ResNeXt backbone, the '
                             f"config's is {backbone.get('type')!r}")
        options['model.backbone.type'] = _XBN_BACKBONES[backbone['type']]
        options['model.backbone.norm_eval'] = False
        arm_parts = [p for p in arm_parts if p != 'backbone']
    if spec.get('frozen_backbone'):
        options['model.backbone.norm_cfg'] = dict(type='BN', requires_grad=False)
        options['model.backbone.norm_eval'] = True
        arm_parts = [p for p in arm_parts if p != 'backbone']
    sites = norm_sites(model, arm_parts)
    for part in arm_parts:
        if not sites[part]:
            raise ValueError(f"{arm.name}: the config's {part} has no norm_cfg to swap "
                             f"(give the part's dict norm_cfg=None to opt it in, or leave "
                             f"{part} out of --parts)")
        for site in sites[part]:
            prefix = 'model.' + _path_str(site)
            options[f'{prefix}.norm_cfg'] = copy.deepcopy(spec.get('norm_cfg'))
            if 'conv_cfg' in spec:
                options[f'{prefix}.conv_cfg'] = copy.deepcopy(spec['conv_cfg'])
    if 'backbone' in arm_parts and spec.get('norm_cfg') is not None:
        # live statistics in the backbone: mmdet's norm_eval=True would freeze them
        options['model.backbone.norm_eval'] = False
    if spec.get('custom_hooks'):  # e.g. PreciseNormHook: appended to the config's own hooks
        options['custom_hooks'] = list(cfg.get('custom_hooks') or []) + \
            copy.deepcopy(list(spec['custom_hooks']))
    base_batch = cfg.get('auto_scale_lr', {}).get('base_batch_size') or \
        cfg.train_dataloader.batch_size
    lr = cfg.optim_wrapper.optimizer.lr
    options['train_dataloader.batch_size'] = arm.batch
    options['optim_wrapper.optimizer.lr'] = lr * arm.batch / base_batch
    if 'auto_scale_lr' in cfg:
        options['auto_scale_lr.enable'] = False
    options['randomness.seed'] = int(seed)
    options['train_cfg.val_interval'] = int(val_interval) if val_interval else 10 ** 9
    for key, value in options.items():
        *parents, leaf = _split(key)
        _parent(cfg, parents)[leaf] = copy.deepcopy(value)
    return cfg, options


def _parent(node, path):
    """Walk ``path``, creating missing dict levels as mmengine's ``--cfg-options`` does (e.g.
    ``randomness`` in a config that never set a seed)."""
    for key in path:
        if isinstance(key, str) and key not in node:
            node[key] = {}
        node = node[key]
    return node


def _split(dotted: str) -> List:
    keys = []
    for part in dotted.split('.'):
        while '[' in part:
            head, _, rest = part.partition('[')
            if head:
                keys.append(head)
            index, _, part = rest.partition(']')
            keys.append(int(index))
        if part:
            keys.append(part)
    return keys
