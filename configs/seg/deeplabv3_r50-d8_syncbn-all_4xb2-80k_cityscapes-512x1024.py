# DeepLabV3 R-50-D8 on Cityscapes, 512x1024 crops, 4 GPUs x 2 crops, 80k iterations: mmseg's own
# config, unchanged (SyncBN in the ResNetV1c backbone, the ASPP decode head and the FCN
# auxiliary head, norm_eval=False; SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly LR),
# with the plugin imported. The norm variants of this folder inherit it and change the norms only.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['mmnorm_plugin'], allow_failed_imports=False)
# checkpoints that torch's weights-only default loads (mmseg's tools/test.py, MMSegInferencer)
custom_hooks = [dict(type='WeightsOnlyCheckpointHook')]
