"""Backbones, registered in mmdet.registry.MODELS."""
from .xbn_resnet import XBNResNet, XBNResNeXt

__all__ = ['XBNResNet', 'XBNResNeXt']
