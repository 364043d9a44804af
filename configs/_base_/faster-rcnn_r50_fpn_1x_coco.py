# Faster R-CNN R50-FPN, COCO 2017, 1x (12 epochs, steps at 8 and 11), 8 GPUs x 2 images.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'plugin.py']
# Images per GPU = train_dataloader.batch_size (2 here, mmdet's default). LR follows the linear
# rule lr = 0.02 * (GPUs x images per GPU) / 16; an 8xb1 variant sets batch_size=1, lr=0.01 and
# auto_scale_lr.base_batch_size=8 (`tools/train.py --auto-scale-lr` rescales for other GPU counts).
