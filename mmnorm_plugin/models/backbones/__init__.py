"""Backbones, registered in mmdet.registry.MODELS."""
