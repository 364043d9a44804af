"""Conv2d with weight centralization (the conv MABN is designed for).

Yan et al., "Towards Stabilizing Batch Statistics in Backward Propagation of Batch
Normalization", ICLR 2020, arXiv 2001.06838, and the official ``megvii-model/MABN`` code.
"""
import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

__all__ = ['CenConv2d', 'centralize_weight', 'fold_cen_conv']


def centralize_weight(weight: Tensor) -> Tensor:
    """``W - mean(W)`` per output filter, the mean taken over (C_in / groups, kh, kw)."""
    return weight - weight.mean(dim=(1, 2, 3), keepdim=True)


@MODELS.register_module()
class CenConv2d(nn.Conv2d):
    r"""``nn.Conv2d`` that convolves with centralized filters.

    .. math::
        \hat W_o = W_o - \frac{1}{C_{in} k_h k_w} \sum_{c, i, j} W_{o, c, i, j}, \qquad
        y = \hat W * x + b

    With every filter summing to zero, the output mean is ``sum_c W_oc E[x_c]`` which vanishes
    when the input channels have similar means, so ``E[y] ~ 0`` and MABN may skip centering
    (and with it the mean statistics of BN's forward and backward). The gradient flows to
    ``W`` through the centering, i.e. it is projected onto zero-mean filters too.

    Constructor, parameters and ``state_dict`` keys are exactly ``nn.Conv2d``'s, so mmcv's
    ``build_conv_layer(dict(type='CenConv2d'), in_channels, out_channels, kernel_size, ...)``
    (mmdet ResNet/FPN/heads through ``conv_cfg``) and plain Conv2d checkpoints work. The
    official code suggests ``bias=False`` in front of MABN; mmcv ``ConvModule`` and mmdet's
    ResNet already drop the bias when a norm follows. For deployment, :meth:`to_conv2d` /
    :func:`fold_cen_conv` bake the centering into a plain ``nn.Conv2d`` with equal outputs.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, centralize_weight(self.weight), self.bias)

    @torch.no_grad()
    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` (same device/dtype) computing the same function."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         stride=self.stride, padding=self.padding, dilation=self.dilation,
                         groups=self.groups, bias=self.bias is not None,
                         padding_mode=self.padding_mode, device=self.weight.device,
                         dtype=self.weight.dtype)
        conv.weight.copy_(centralize_weight(self.weight))
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv


def fold_cen_conv(module: nn.Module) -> nn.Module:
    """Replace every :class:`CenConv2d` in ``module`` by its plain ``nn.Conv2d`` equivalent.

    Returns the converted module (``module`` itself is converted in place unless it is a
    ``CenConv2d``, in which case the new conv is returned), like
    ``mmengine.model.revert_sync_batchnorm``. Afterwards MABN/BN folding tools see ordinary
    convs.
    """
    if isinstance(module, CenConv2d):
        return module.to_conv2d()
    for name, child in module.named_children():
        new_child = fold_cen_conv(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
