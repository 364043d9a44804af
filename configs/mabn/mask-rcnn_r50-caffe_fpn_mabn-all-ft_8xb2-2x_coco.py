# The official MABN fine-tune (the README's "2x fine-tune, MABN" row): the caffe-style
# from-scratch setup (base) initialized from the authors' weight-centralized ImageNet ResNet-50,
# R50-wc.pth from megvii-model/MABN, converted with its MABN state kept:
#   python tools/model_converters/mabn_official_to_mmdet.py R50-wc.pth \
#       checkpoints/mabn/resnet50-caffe_mabn-wc_official.pth
# This is the checkpoint that reproduces the paper; the official run loads it into this
# stride-in-1x1 network with BGR mean-only input, whatever layout the file has (README.md).
# Nothing frozen, MABN in training mode. 8 GPUs x 2 images, lr 0.02, 2x.
_base_ = './mask-rcnn_r50-caffe_fpn_mabn-all-scratch_8xb2-2x_coco.py'
model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,  # the scratch parent has init_cfg=None
            type='Pretrained',
            checkpoint='checkpoints/mabn/resnet50-caffe_mabn-wc_official.pth')))
