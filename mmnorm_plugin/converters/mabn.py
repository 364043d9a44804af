"""Turn a BatchNorm ResNet checkpoint into one for a CenConv2d + MABN ResNet.

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
from typing import Dict, Mapping

import torch
from torch import Tensor

__all__ = ['extract_backbone_state_dict', 'convert_resnet_to_mabn']


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
