"""Deployment: turn a plugin model into a plain mmdet model (used by tools/deploy/), and export
its backbone + neck to ONNX (:mod:`.onnx`, the ``deploy`` extra)."""
from .convert import (convert_config, convert_detector, convert_norms_to_bn,
                      equivalent_batchnorm)
from .onnx import export_backbone_neck

__all__ = ['convert_config', 'convert_detector', 'convert_norms_to_bn', 'equivalent_batchnorm',
           'export_backbone_neck']
