"""XBNBlock ResNet and ResNeXt backbones (Huang et al., CVPR 2022, arXiv 2203.10778).

The paper ("Delving into the Estimation Shift of Batch Normalization in a Network") observes
that BatchNorm's population statistics, estimated during training, differ from the statistics a
layer actually sees at test time (the *estimation shift*), and that this shift accumulates
through a stack of BN layers because each BN's input depends on all earlier estimates. A
batch-free normalization (BFN, GroupNorm in the paper) computes its statistics per sample, in
training and at test time alike, so it has no estimate to shift and it re-normalizes whatever
shift reaches it. XBNBlock therefore replaces exactly one BN of every residual block by a BFN
and keeps BN everywhere else (BN's regularization and inference-time folding are kept for two
thirds of the norms).

Design: the blocks subclass mmdet's ``Bottleneck``/``BasicBlock`` (and ResNeXt's
``Bottleneck``), let them build everything, then swap one norm child for the BFN; the backbones
subclass mmdet's ``ResNet``/``ResNeXt`` and only add the BFN arguments, the stem swap and the
zero-init fix. ``forward``, freezing, ``norm_eval``, DCN, plugins and checkpointing are mmdet's.
"""
import copy
import inspect
from collections import OrderedDict
from typing import Dict, Optional, Tuple

from mmcv.cnn import build_norm_layer
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.backbones.resnext import Bottleneck as ResNeXtBottleneck
from mmdet.models.backbones.resnext import ResNeXt
from mmdet.registry import MODELS
from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...norms.reporting import warn_once

__all__ = [
    'DEFAULT_BFN_CFG', 'BFN_POSITIONS', 'build_bfn_layer', 'XBNBasicBlock', 'XBNBottleneck',
    'XBNResNeXtBottleneck', 'XBNResNet', 'XBNResNeXt'
]

#: The paper's BFN: GroupNorm with 64 groups (the official ImageNet runs pass ``num_groups=64``
#: for ResNet and ResNeXt). ``num_groups`` is an upper bound, see :func:`build_bfn_layer`.
DEFAULT_BFN_CFG = dict(type='GN', num_groups=64, requires_grad=True)

#: Which norm of a block becomes the BFN. Bottleneck: P1 after conv1 (1x1), P2 after conv2
#: (3x3, "XBNBlock", the paper's default), P3 after conv3 (1x1, before the residual add).
#: BasicBlock has two norms: P1 and P2 use the first (as the official ResNet-18/34 P1 and P2
#: models), P3 the second (as the official P3 model).
BFN_POSITIONS = ('P1', 'P2', 'P3')


def _norm_class(norm_type):
    if inspect.isclass(norm_type):
        return norm_type
    with ROOT_MODELS.switch_scope_and_registry(None) as registry:
        return registry.get(norm_type)


def build_bfn_layer(cfg: Dict, num_channels: int, postfix=''
                    ) -> Tuple[str, nn.Module]:
    """Build the batch-free norm of an XBNBlock with ``mmcv.cnn.build_norm_layer``.

    Two rules on top of ``build_norm_layer``:

    * ``num_groups`` (GN, and any norm taking it) is an upper bound: the layer uses
      ``min(num_groups, num_channels)`` groups. This is how the paper's single setting of
      64 groups applies to every width (the official GN factory caps the same way): the
      64-channel stem and layer1 norms get one channel per group, layer4's 512 get eight. A
      count that, after capping, does not divide the channels raises a ``ValueError``.
    * ``type='LN'`` means layer normalization of each sample over (C, H, W) with a
      per-channel affine, built as ``GroupNorm(1, C)``: mmcv registers 'LN' as
      ``torch.nn.LayerNorm(C)``, which on an NCHW tensor would normalize the width axis.

    Returns:
        ``(name, layer)`` as ``build_norm_layer`` does (e.g. ``('gn2', GroupNorm)``).
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'bfn_cfg must be a dict with a "type" key, got {cfg!r}')
    cfg = copy.deepcopy(dict(cfg))
    norm_cls = _norm_class(cfg['type'])
    if norm_cls is None:
        raise KeyError(f"bfn_cfg type {cfg['type']!r} is not a registered norm layer")
    if norm_cls is nn.LayerNorm:
        cfg = dict(type='GN', num_groups=1,
                   **{k: v for k, v in cfg.items() if k in ('eps', 'requires_grad')})
        norm_cls = nn.GroupNorm
    if cfg.get('num_groups') is not None:
        wanted = int(cfg['num_groups'])
        if wanted < 1:
            raise ValueError(f'bfn_cfg num_groups must be >= 1, got {wanted}')
        groups = min(wanted, num_channels)
        if num_channels % groups:
            divisors = [d for d in range(1, groups + 1) if num_channels % d == 0]
            raise ValueError(
                f'bfn_cfg num_groups={wanted} gives {groups} groups for a BFN on '
                f'{num_channels} channels, which does not divide them; use a divisor of '
                f'{num_channels} (largest <= {groups}: {divisors[-1]}) or a width that is a '
                f'multiple of {groups}')
        cfg['num_groups'] = groups
    name, layer = build_norm_layer(cfg, num_channels, postfix=postfix)
    if isinstance(layer, _BatchNorm) or getattr(layer, 'track_running_stats', False):
        warn_once(
            f'xbn-batch-bfn-{norm_cls.__name__}',
            f'XBNBlock bfn_cfg builds {norm_cls.__name__}, which keeps running (population) '
            'statistics: it is not batch-free, so it does not block the estimation shift '
            'the way the paper\'s GroupNorm does.')
    return name, layer


def _replace_child(module: nn.Module, old_name: str, new_name: str, child: nn.Module) -> None:
    """Put ``child`` where ``old_name`` was, under ``new_name``, and drop the old child.

    Adding the BFN next to the old norm would leave the old one registered (dead parameters in
    the state dict, DDP "unused parameters" errors), because the abbreviation in the name
    changes with the type (``bn2`` -> ``gn2``). Rebuilding the dict keeps the child order, so
    ``print(model)`` and the state dict read in forward order.
    """
    if old_name not in module._modules:
        raise KeyError(f'{type(module).__name__} has no child {old_name!r}')
    module._modules = OrderedDict(
        (new_name, child) if name == old_name else (name, value)
        for name, value in module._modules.items())


class _BFNBlockMixin:
    """Turns one norm of an mmdet residual block into a batch-free norm.

    Norm ``i`` of mmdet's blocks follows conv ``i``, so the BFN's channel count is that conv's
    ``out_channels`` (``width`` in ResNeXt, ``planes`` or ``4 * planes`` in ResNet).

    Args:
        bfn_cfg (dict): norm config of the BFN. Default: :data:`DEFAULT_BFN_CFG`.
        bfn_position (str): 'P1', 'P2' (default) or 'P3', see :data:`BFN_POSITIONS`.
    """
    #: bfn_position -> index of the norm it replaces
    bfn_norm_index: Dict[str, int] = {}
    #: index of the norm before the residual add (zeroed by ``zero_init_residual``)
    last_norm_index: int = 0

    def __init__(self, *args, bfn_cfg: Optional[Dict] = None, bfn_position: str = 'P2',
                 **kwargs):
        super().__init__(*args, **kwargs)
        if bfn_position not in BFN_POSITIONS:
            raise ValueError(f'bfn_position must be one of {BFN_POSITIONS}, '
                             f'got {bfn_position!r}')
        bfn_cfg = DEFAULT_BFN_CFG if bfn_cfg is None else bfn_cfg
        index = self.bfn_norm_index[bfn_position]
        channels = getattr(self, f'conv{index}').out_channels
        name, layer = build_bfn_layer(bfn_cfg, channels, postfix=index)
        _replace_child(self, getattr(self, f'norm{index}_name'), name, layer)
        setattr(self, f'norm{index}_name', name)
        self.bfn_position = bfn_position
        self.bfn_name = name

    @property
    def bfn(self) -> nn.Module:
        """nn.Module: the block's batch-free norm."""
        return getattr(self, self.bfn_name)


class XBNBasicBlock(_BFNBlockMixin, BasicBlock):
    """mmdet ``BasicBlock`` (ResNet-18/34) with its first (P1/P2) or second (P3) norm a BFN."""
    bfn_norm_index = {'P1': 1, 'P2': 1, 'P3': 2}
    last_norm_index = 2


class XBNBottleneck(_BFNBlockMixin, Bottleneck):
    """mmdet ``Bottleneck`` with norm 1, 2 (default) or 3 a BFN; see :class:`_BFNBlockMixin`."""
    bfn_norm_index = {'P1': 1, 'P2': 2, 'P3': 3}
    last_norm_index = 3


class XBNResNeXtBottleneck(_BFNBlockMixin, ResNeXtBottleneck):
    """mmdet ResNeXt ``Bottleneck`` with norm 1, 2 (default, after the grouped 3x3) or 3 a BFN.

    The swap runs after ResNeXt has rebuilt its convs and norms at ``width`` channels.
    """
    bfn_norm_index = {'P1': 1, 'P2': 2, 'P3': 3}
    last_norm_index = 3


class _XBNBackboneMixin:
    """The XBNBlock additions shared by :class:`XBNResNet` and :class:`XBNResNeXt`."""

    def __init__(self, *args, bfn_cfg: Optional[Dict] = None, bfn_position: str = 'P2',
                 stem_bfn: bool = True, **kwargs):
        if bfn_position not in BFN_POSITIONS:
            raise ValueError(f'bfn_position must be one of {BFN_POSITIONS}, '
                             f'got {bfn_position!r}')
        self.bfn_cfg = copy.deepcopy(DEFAULT_BFN_CFG if bfn_cfg is None else bfn_cfg)
        self.bfn_position = bfn_position
        self.stem_bfn = stem_bfn
        # mmdet decides zero-init with `block is Bottleneck`, which is False for every subclass
        # (ResNeXt's own blocks included), so the last norms would silently keep weight 1.
        # Same condition as mmdet: only when no init_cfg/pretrained replaces the default init.
        self._zero_init_blocks = (kwargs.get('zero_init_residual', True)
                                  and kwargs.get('init_cfg') is None
                                  and kwargs.get('pretrained') is None)
        super().__init__(*args, **kwargs)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        super()._make_stem_layer(in_channels, stem_channels)
        if not self.stem_bfn:
            return
        if self.deep_stem:
            # No official deep-stem model exists; the stem's last norm (the one whose output
            # leaves the stem, like the single norm of the 7x7 stem) becomes the BFN.
            # mmdet's deep stem is (conv, norm, ReLU) x 3: the last norm sits before the ReLU.
            index = len(self.stem) - 2
            _, layer = build_bfn_layer(self.bfn_cfg, stem_channels)
            self.stem._modules[str(index)] = layer
        else:
            name, layer = build_bfn_layer(self.bfn_cfg, self.conv1.out_channels, postfix=1)
            _replace_child(self, self.norm1_name, name, layer)
            self.norm1_name = name

    def make_res_layer(self, **kwargs):
        block = kwargs['block']
        if self._zero_init_blocks and kwargs.get('init_cfg') is None:
            kwargs['init_cfg'] = dict(type='Constant', val=0,
                                      override=dict(name=f'norm{block.last_norm_index}'))
        return super().make_res_layer(
            bfn_cfg=self.bfn_cfg, bfn_position=self.bfn_position, **kwargs)


_BACKBONE_DOC = """
    The paper's batch-free norm (BFN) replaces one norm of every residual block and, with
    ``stem_bfn``, the stem's norm; all other norms follow ``norm_cfg`` (BN). Accepts every
    argument of mmdet's ``{parent}`` unchanged (depth, strides, dilations, out_indices, style,
    deep_stem, avg_down, frozen_stages, conv_cfg, norm_cfg, norm_eval, dcn, stage_with_dcn,
    plugins, with_cp, zero_init_residual, init_cfg{extra}), plus:

    Args:
        bfn_cfg (dict): config of the BFN, any registered norm. Default
            ``dict(type='GN', num_groups=64, requires_grad=True)``, the paper's ImageNet
            setting. ``num_groups`` is capped at each layer's channel count (min(64, C): one
            channel per group on 64 channels, 8 on 512), as the official code does; a count
            that does not divide a layer's channels raises ``ValueError`` (tiny test widths need
            a small ``num_groups``). ``type='LN'`` is per-sample LayerNorm over (C, H, W)
            (built as ``GroupNorm(1, C)``). Norms with running statistics (BN and its variants)
            are accepted for ablations, with a warning, but are not batch-free.
        bfn_position (str): which norm of each block becomes the BFN. 'P2' (default, the paper's
            "XBNBlock"): after the 3x3 conv; 'P1': after conv1; 'P3': after conv3, before the
            residual add. BasicBlock (depth 18/34): first norm for P1/P2, second for P3, as in
            the official models.
        stem_bfn (bool): the stem norm is a BFN too. Default True: every official XBNBlock model
            has a GroupNorm stem. With ``deep_stem`` the last of the three stem norms is swapped
            (our choice; there is no official deep-stem model).

    Behaviour that differs from a plain swap of ``norm_cfg``:

    * ``norm_eval=True`` (mmdet's default) puts only ``_BatchNorm`` layers in eval mode: BN
      statistics are frozen while the GroupNorm BFN keeps normalizing each sample with its own
      statistics, as in the paper's detection fine-tuning (FrozenBN + live GN).
    * ``frozen_stages=k`` freezes the stem and stages 1..k entirely, BFN affine included.
    * ``zero_init_residual=True`` zeroes the last norm of every block (also when that norm is the
      BFN, P3). mmdet's own check (``block is Bottleneck``) skips subclasses; here it is fixed.
    * Parameter names follow mmdet/torchvision (``conv1``, ``bn1``, ``layer1.0.bn1``, ...); the
      BFN is named by its type (``gn1`` for the stem, ``layerX.Y.gn2`` for P2), so a BN
      checkpoint loads into every BN part and reports the BFN keys as missing and its ``bn2``
      keys as unexpected (see :func:`mmnorm_plugin.model_converters.xbn.checkpoint_key_report`);
      official XBNBlock checkpoints are converted by
      ``tools/model_converters/xbn_official_to_mmdet.py``.
"""


@MODELS.register_module()
class XBNResNet(_XBNBackboneMixin, ResNet):
    __doc__ = 'ResNet with XBNBlocks (arXiv 2203.10778).\n' + _BACKBONE_DOC.format(
        parent='ResNet', extra='')

    arch_settings = {
        18: (XBNBasicBlock, (2, 2, 2, 2)),
        34: (XBNBasicBlock, (3, 4, 6, 3)),
        50: (XBNBottleneck, (3, 4, 6, 3)),
        101: (XBNBottleneck, (3, 4, 23, 3)),
        152: (XBNBottleneck, (3, 8, 36, 3)),
    }


@MODELS.register_module()
class XBNResNeXt(_XBNBackboneMixin, ResNeXt):
    __doc__ = 'ResNeXt with XBNBlocks (arXiv 2203.10778).\n' + _BACKBONE_DOC.format(
        parent='ResNeXt', extra=', groups, base_width')

    arch_settings = {
        depth: (XBNResNeXtBottleneck, stages)
        for depth, (_, stages) in ResNeXt.arch_settings.items()
    }
