"""Deployment: turn a plugin model into a plain mmdet model (used by tools/deploy/)."""
from .convert import (convert_config, convert_detector, convert_norms_to_bn,
                      equivalent_batchnorm)

__all__ = ['convert_config', 'convert_detector', 'convert_norms_to_bn', 'equivalent_batchnorm']
