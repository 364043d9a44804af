"""Checkpoints for a CenConv2d + MABN ResNet: from the official MABN code, or from a BN ResNet.

:func:`convert_official_mabn` renames a checkpoint of ``megvii-model/MABN`` (the authors'
weight-centralized ImageNet ResNet-50 ``R50-wc.pth`` or a trained detector) to mmdet's keys; it
is exact (see its docstring). :func:`convert_resnet_to_mabn`, described below, approximates such
a checkpoint from an ordinary BN ResNet.

MABN (arXiv 2001.06838) is fine-tuned from an ImageNet model trained with weight
centralization *and* MABN ("R50-wc.pth" in ``megvii-model/MABN``); a standard BN model is not
that. This converter produces the closest thing that can be derived from a BN checkpoint
(torchvision ``resnet50``, an mmdet/mmpretrain ResNet, or the ``backbone.`` part of an mmdet
detector); its keys are those of ``mmdet.models.ResNet(conv_cfg=dict(type='CenConv2d'),
norm_cfg=dict(type='MABN'))``, which are the BN ResNet's own (``bn*`` abbreviation, Conv2d
parameter names):

* every 4-D conv weight is centralized per output filter. ``CenConv2d`` centralizes in its
  forward anyway, so this does not change what the network computes with CenConv2d; it makes
  the stored weights be the ones actually used (plain convs after deployment folding give the
  same function) and drops the per-filter mean component, which CenConv2d never trains but
  weight decay would keep shrinking;
* BN statistics: MABN has no mean, its ``running_var`` is the EMA R of the second moment, and
  its iteration counter restarts at 0 (warm-up, SMA window and renorm hold start over; the
  ring buffers are absent, mmengine's ``Pretrained`` loader reports them as missing and keeps
  their zero initialization). ``mean='drop'`` (default) discards ``running_mean``, keeps
  ``bias`` and sets R to the BN variance: a centralized conv's output has about zero mean, so
  the BN's ``x - mean`` is what the new conv produces. ``mean='fold'`` instead moves the mean
  into the bias, ``beta - gamma * mean / sqrt(var + eps)``: exact in inference when the convs
  are *not* centralized (``centralize=False``), i.e. the converted model reproduces the BN
  model, but with centralized convs it shifts activations by a mean that no longer exists.

Caveat (documented in ``configs/mabn/README.md``): the published MABN fine-tune numbers were
obtained from an ImageNet model trained with weight centralization, not from a converted BN
model; results from this converter are not comparable to them without a run.
"""
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch
from torch import Tensor

__all__ = ['extract_backbone_state_dict', 'convert_resnet_to_mabn', 'convert_official_mabn']


def extract_backbone_state_dict(checkpoint: Mapping) -> 'OrderedDict[str, Tensor]':
    """The backbone's tensors from a raw state dict or an mmengine/mmdet checkpoint.

    Unwraps ``state_dict``/``model``, strips DDP's ``module.``, keeps only ``backbone.*``
    (prefix removed) when the checkpoint is a whole detector, and drops a classifier ``fc.*``.
    """
    state = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    state = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                        for k, v in state.items())
    if any(k.startswith('backbone.') for k in state):
        state = OrderedDict((k[len('backbone.'):], v) for k, v in state.items()
                            if k.startswith('backbone.'))
    return OrderedDict((k, v) for k, v in state.items()
                       if torch.is_tensor(v) and not k.startswith('fc.'))


def convert_resnet_to_mabn(checkpoint: Mapping,
                           centralize: bool = True,
                           mean: str = 'drop',
                           eps: float = 1e-5) -> 'OrderedDict[str, Tensor]':
    """Return the CenConv2d + MABN ResNet state dict for a BN ResNet checkpoint.

    Args:
        checkpoint: a state dict or a checkpoint dict (see :func:`extract_backbone_state_dict`).
        centralize: subtract each conv filter's mean over (C_in, kh, kw). Default True.
        mean: ``'drop'`` (default) or ``'fold'``; what happens to BN's ``running_mean``
            (module docstring).
        eps: the BN layers' epsilon, used by ``mean='fold'``. Default 1e-5 (torchvision/mmdet).
    """
    if mean not in ('drop', 'fold'):
        raise ValueError(f"mean must be 'drop' or 'fold', got {mean!r}")
    state = extract_backbone_state_dict(checkpoint)
    norms = [k[:-len('running_var')] for k in state if k.endswith('running_var')]
    if not norms:
        raise ValueError('no BatchNorm layer (no *.running_var) in the checkpoint: not a BN '
                         'ResNet, or already converted?')
    out: Dict[str, Tensor] = OrderedDict(
        (k, v.clone()) for k, v in state.items() if not k.endswith('num_batches_tracked'))
    for prefix in norms:
        running_mean = out[prefix + 'running_mean'].double()
        running_var = out[prefix + 'running_var']
        if mean == 'fold':
            gamma = out.get(prefix + 'weight')
            gamma = torch.ones_like(running_mean) if gamma is None else gamma.double()
            if prefix + 'bias' not in out:
                raise ValueError(f"mean='fold' needs an affine BN, {prefix}bias is missing")
            bias = out[prefix + 'bias']
            shift = gamma * running_mean / (running_var.double() + eps).sqrt()
            out[prefix + 'bias'] = (bias.double() - shift).to(bias.dtype)
        out[prefix + 'running_mean'] = torch.zeros_like(out[prefix + 'running_mean'])
        out[prefix + 'num_batches_tracked'] = torch.tensor(0, dtype=torch.long)
    if centralize:
        for key, value in out.items():
            if key.endswith('weight') and value.dim() == 4:
                w = value.double()
                out[key] = (w - w.mean(dim=(1, 2, 3), keepdim=True)).to(value.dtype)
    return OrderedDict(out)


# Official (megvii-model/MABN) names of a MABN2d's state -> ours (mmnorm_plugin.norms.MABN).
# Detection layer (det/maskrcnn_benchmark/layers/MABN.py): running_var of shape (1, C, 1, 1),
# an int64 counter ``iters`` of shape (1,), ring buffers ``buffer_x2`` (forward E[x^2]) and
# ``buffer_gz`` (backward Psi) of shape (real_B / B, C), written at slot ``iters % size`` with
# ``iters`` counted from 1 -- the same slot rule, statistics and momentum convention as ours.
_DET_BUFFERS = {'buffer_x2': 'chi2_history', 'buffer_gz': 'psi_history'}
# The ImageNet layer (cls/networks/MABN.py) has running_var of shape (C,), a float ``iters`` and
# buffers ``sta_matrix``, ``pre_x2``, ``pre_gz`` that average over pairs of images inside one
# batch, a statistic our layer does not keep: they are not converted.


def _official_backbone(state: Mapping) -> Tuple['OrderedDict[str, Tensor]', str, List[str]]:
    """Backbone tensors under mmdet ResNet names, the source layout, and the dropped keys."""
    for key in ('state_dict', 'model'):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    state = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                        for k, v in state.items() if torch.is_tensor(v))
    dropped: List[str] = []
    if any(k.startswith(('backbone.body.', 'stem.')) for k in state):
        # maskrcnn-benchmark detector (or its bare ResNet body): the stem is a submodule
        layout = 'maskrcnn-benchmark'
        body = OrderedDict()
        for key, value in state.items():
            name = key[len('backbone.body.'):] if key.startswith('backbone.body.') else key
            if name.startswith('stem.'):
                body[name[len('stem.'):]] = value
            elif name.startswith('layer'):
                body[name] = value
            else:
                dropped.append(key)
        return body, layout, dropped
    layout = 'torchvision'  # cls/networks/resnet.py: conv1, bn1, layer*, fc
    body = OrderedDict()
    for key, value in state.items():
        if key.startswith('fc.'):
            dropped.append(key)
        else:
            body[key] = value
    return body, layout, dropped


def convert_official_mabn(checkpoint: Mapping,
                          restart: bool = False) -> Tuple['OrderedDict[str, Tensor]', Dict]:
    """Convert an official ``megvii-model/MABN`` checkpoint to mmdet ``ResNet`` keys.

    The target is ``mmdet.models.ResNet(conv_cfg=dict(type='CenConv2d'),
    norm_cfg=dict(type='MABN'))``. Accepted sources:

    * the detection code's (maskrcnn-benchmark) state dict, e.g. a trained detector or the
      backbone the fine-tune configs load: ``[module.]backbone.body.stem.conv1.weight``,
      ``...stem.bn1.{weight,bias,running_var,iters,buffer_x2,buffer_gz}``,
      ``...layer1.0.{conv1,bn1,conv2,bn2,conv3,bn3}``, ``...layer1.0.downsample.{0,1}``;
      FPN/RPN/RoI-head keys are dropped (listed in the report);
    * the ImageNet code's (``cls/networks/resnet.py``, torchvision names) state dict; ``fc`` is
      dropped.

    Renaming: ``stem.conv1``/``stem.bn1`` -> ``conv1``/``bn1``; every other name (``layerX.Y``,
    ``convK``, ``bnK``, ``downsample.0/1``) is already mmdet's. Conv weights are copied as
    stored: both the official ``CenConv2d`` and ours centralize in the forward, so the function
    is unchanged. Norm state: ``running_var`` -> ``running_var`` (flattened to (C,)),
    ``running_mean`` = 0 (MABN never centers), ``iters`` -> ``num_batches_tracked`` (a scalar),
    ``buffer_x2``/``buffer_gz`` -> ``chi2_history``/``psi_history``. The result loads
    strictly and the converted network computes what the official one computes, in training
    (same SMA window contents and counter) and in inference.

    The detection backbone puts the stride of each stage in the first 1x1 conv
    (maskrcnn-benchmark's ``STRIDE_IN_1X1=True`` default, not changed by the MABN configs) and
    takes BGR input with the mean subtracted and no std scaling: load the result into
    ``style='caffe'`` with that preprocessing (``configs/mabn/*r50-caffe*``). The ImageNet code
    is torchvision-style (stride in the 3x3): ``style='pytorch'``.

    Args:
        checkpoint: the loaded official checkpoint (a state dict, or a dict with ``model`` /
            ``state_dict``); a DDP ``module.`` prefix is stripped.
        restart: drop the iteration counter and the ring buffers, so that warm-up, SMA window
            and renorm hold start over (MABN keeps ``running_var`` as R). Needed when the target
            window differs from the checkpoint's (``buffer_size=32`` of the 8xb1 configs). The
            ImageNet code's ring buffers hold a different statistic, so this source is always
            restarted.

    Returns:
        ``(state_dict, report)``; ``report`` has ``layout`` (``'maskrcnn-benchmark'`` or
        ``'torchvision'``), ``style`` (``'caffe'``/``'pytorch'``), ``restarted`` and ``dropped``
        (source keys not converted).

    Raises:
        ValueError: a BatchNorm checkpoint (``running_mean`` and no MABN counter: use
            :func:`convert_resnet_to_mabn`), or no norm layer at all.
    """
    body, layout, dropped = _official_backbone(checkpoint)
    norms = [k[:-len('running_var')] for k in body if k.endswith('running_var')]
    if not norms:
        raise ValueError('no norm layer (no *.running_var) in the checkpoint: not an official '
                         'MABN ResNet')
    if any(p + 'running_mean' in body and p + 'iters' not in body for p in norms):
        raise ValueError('this is a BatchNorm checkpoint (running_mean, no MABN iters): convert '
                         'it with convert_resnet_to_mabn / tools/model_converters/resnet_to_mabn.py')
    restart = restart or layout == 'torchvision'
    norm_of = {k: p for p in norms for k in body if k.startswith(p) and '.' not in k[len(p):]}
    out: Dict[str, Tensor] = OrderedDict()
    for key, value in body.items():
        prefix = norm_of.get(key)
        if prefix is None:
            out[key] = value.clone()
        elif prefix + 'running_mean' not in out:
            # first tensor of this norm: emit its whole state, in MABN's own key order
            out.update(_official_norm_state(body, prefix, restart))
    report = dict(layout=layout, style='caffe' if layout == 'maskrcnn-benchmark' else 'pytorch',
                  restarted=restart, dropped=dropped)
    return OrderedDict(out), report


def _official_norm_state(body: Mapping, prefix: str, restart: bool) -> Dict[str, Tensor]:
    """One official MABN2d's tensors under MABN's names (see :func:`convert_official_mabn`)."""
    out: Dict[str, Tensor] = OrderedDict()
    running_var = body[prefix + 'running_var'].reshape(-1).clone()
    for name in ('weight', 'bias'):
        if prefix + name in body:
            out[prefix + name] = body[prefix + name].clone()
    out[prefix + 'running_mean'] = torch.zeros_like(running_var)
    out[prefix + 'running_var'] = running_var
    iters = body.get(prefix + 'iters')
    count = 0 if restart or iters is None else int(iters.reshape(-1)[0].item())
    out[prefix + 'num_batches_tracked'] = torch.tensor(count, dtype=torch.long)
    if not restart:
        for theirs, ours in _DET_BUFFERS.items():
            if prefix + theirs not in body:
                raise ValueError(f'{prefix}{theirs} is missing: not the official detection MABN '
                                 f'layer (restart=True starts its window over instead)')
            out[prefix + ours] = body[prefix + theirs].clone()
    return out
