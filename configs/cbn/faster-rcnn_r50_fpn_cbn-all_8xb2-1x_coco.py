# Faster R-CNN R50-FPN with CBN also in the backbone (not in the official release, which
# froze the backbone norms): ImageNet BN weights load into CBN unchanged (same names), and
# norm_eval=False lets the backbone layers use batch + cross-iteration statistics. The stem
# and stage 1 stay frozen (frozen_stages=1, mmdet's default), so they act as frozen BN.
# Window 3, 8-epoch burn-in as in the neck-head configs. 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = './faster-rcnn_r50_fpn_cbn-neck-head_8xb2-1x_coco.py'
model = dict(backbone=dict(norm_cfg={{_base_.norm_cfg}}, norm_eval=False))
