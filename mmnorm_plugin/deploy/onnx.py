"""ONNX export of a converted detector's backbone and neck (``pip install -e .[deploy]``).

The path: :func:`~mmnorm_plugin.deploy.convert.convert_detector` (every plugin norm -> its
eval-equivalent BN, ``CenConv2d`` -> ``Conv2d``), ``mmcv.cnn.fuse_conv_bn`` (BN folded into the
convs), then ``torch.onnx.export`` of backbone + neck: the part of the detector where the norms
are. The graph holds only convolutions, activations, pooling, resizing and additions, so any
ONNX runtime runs it; onnxruntime reproduces the PyTorch outputs within 1e-4 (tested).

The RPN/RoI heads, their anchors and NMS are mmdet's, not this plugin's: exporting the whole
detector is mmdeploy's job, and the converted config/checkpoint is plain mmdet, which mmdeploy
takes as it is (not run here).

torch 2.13's ``torch.onnx.export`` uses the ``torch.export``-based exporter by default, which
needs ``onnxscript`` (without it: ``No module named 'onnxscript'``); the ``deploy`` extra
installs it with ``onnx`` and ``onnxruntime``. The input shape is fixed (one image of
``input_shape``): what a deployed detector sees after its resize and padding.
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ['BackboneNeck', 'check_export_deps', 'export_backbone_neck']

_EXTRA_HINT = ("ONNX export needs onnx and onnxscript (and onnxruntime to run the result): "
               "pip install -e .[deploy], or MMNORM_EXTRAS=deploy bash tools/setup_env.sh")


def check_export_deps() -> None:
    """Raise ``ImportError`` naming the ``deploy`` extra unless the exporter can run."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(f'{err}. {_EXTRA_HINT}') from err


class BackboneNeck(nn.Module):
    """A detector's ``backbone`` followed by its ``neck``: image -> tuple of feature maps."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.backbone = detector.backbone
        self.neck = detector.neck if getattr(detector, 'with_neck', False) else None

    def forward(self, img: Tensor) -> Tuple[Tensor, ...]:
        feats = self.backbone(img)
        return tuple(self.neck(feats) if self.neck is not None else feats)


def export_backbone_neck(detector: nn.Module, path: str,
                         input_shape: Sequence[int] = (1, 3, 800, 1344)) -> str:
    """Fold the BNs of a converted (plain-mmdet) ``detector`` into its convs (in place) and
    export its backbone + neck to ``path``; outputs are named ``feat0``, ``feat1``, ...
    Returns ``path``.

    ``detector`` must not contain plugin norms any more (``convert_detector``'s ``model``):
    ``fuse_conv_bn`` folds every ``_BatchNorm`` subclass with BN's formula, wrong for some
    of them (see :mod:`~mmnorm_plugin.deploy.convert`).
    """
    check_export_deps()
    from mmcv.cnn import fuse_conv_bn

    from .convert import PLUGIN_CLASSES
    plugin = sorted({type(m).__name__ for m in detector.modules()
                     if isinstance(m, PLUGIN_CLASSES)})
    if plugin:
        raise ValueError(f'{plugin} still in the model: convert it first (convert_detector / '
                         'convert_norms_to_bn), then export')
    net = BackboneNeck(fuse_conv_bn(detector.eval())).eval()
    img = torch.zeros(tuple(input_shape))
    with torch.no_grad():
        num_outputs = len(net(img))
    torch.onnx.export(net, (img, ), path, input_names=['img'],
                      output_names=[f'feat{i}' for i in range(num_outputs)])
    return path
