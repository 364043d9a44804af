"""Conv layers, registered in mmengine root MODELS (found by mmcv.cnn.build_conv_layer)."""
from .cen_conv import CenConv2d, centralize_weight, fold_cen_conv

__all__ = ['CenConv2d', 'centralize_weight', 'fold_cen_conv']
