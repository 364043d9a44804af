"""Conv layers, registered in mmengine root MODELS (found by mmcv.cnn.build_conv_layer)."""
