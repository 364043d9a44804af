"""Pretrain the tiny detectors' backbone for the *fine-tune* setting of the norm study.

The CBN and XBN papers compare norms in detectors whose backbone was pretrained on ImageNet and
is fine-tuned with frozen BN, the compared norm sitting in FPN and heads. ImageNet weights cannot
be downloaded here, so the project pretrains its own: the ResNet-18 with 16 base channels of
``configs/_base_/models/faster-rcnn_r18-w16_fpn_tiny.py`` (mmdet's ``ResNet``, BN) classifies
32 px crops of the same photographs as showing one of the ten digits or none
(:func:`~mmnorm_plugin.datasets.photo_digits.photo_digit_crops`: a separate task, all ten digits,
only the handwriting the detection set trains on). SGD with momentum, cosine LR, batch 64, plain
BN; the backbone's state dict is written as ``{'state_dict': ..., 'meta': ...}`` that
``init_cfg=dict(type='Pretrained', checkpoint=...)`` loads and ``torch.load`` reads with its
weights-only default.
"""
import math
import time
from typing import Dict

import torch
import torch.nn as nn

__all__ = ['pretrain_backbone']


def _backbone():
    from mmdet.models.backbones import ResNet
    return ResNet(depth=18, base_channels=16, out_indices=(3, ), norm_cfg=dict(type='BN'),
                  norm_eval=False, frozen_stages=-1)


def pretrain_backbone(out_path: str, num_train: int = 20000, num_val: int = 2000,
                      epochs: int = 4, batch_size: int = 64, lr: float = 0.1,
                      seed: int = 0, logger=None) -> Dict:
    """Train, evaluate on held-out crops, save; return ``dict(val_accuracy, seconds, path)``."""
    from mmengine.logging import print_log
    from ..datasets.photo_digits import photo_digit_crops
    torch.manual_seed(seed)
    start = time.time()
    x_train, y_train = photo_digit_crops(num_train, seed=seed)
    x_val, y_val = photo_digit_crops(num_val, seed=seed + 1)
    # mmdet's data preprocessor normalizes with the ImageNet mean/std (BGR->RGB aside): match it
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)

    def tensor(x):
        return (torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean) / std

    xt, yt, xv, yv = tensor(x_train), torch.from_numpy(y_train), tensor(x_val), \
        torch.from_numpy(y_val)
    backbone = _backbone()
    backbone.init_weights()
    model = nn.Sequential()
    model.add_module('backbone', backbone)
    head = nn.Linear(16 * 8, 11)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=lr,
                                momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * math.ceil(len(xt) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)

    def logits(x):
        return head(backbone(x)[0].mean(dim=(2, 3)))

    for epoch in range(epochs):
        backbone.train()
        order = torch.randperm(len(xt), generator=gen)
        total = torch.zeros(())
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(logits(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            # summed on the tensor side: one host read per epoch, and no float() of a
            # tensor that requires grad (torch warns about it)
            total += loss.detach() * len(idx)
        print_log(f'pretrain epoch {epoch + 1}/{epochs}: loss {float(total) / len(xt):.3f}',
                  logger=logger)
    backbone.eval()
    with torch.no_grad():
        pred = torch.cat([logits(xv[i:i + 256]).argmax(1) for i in range(0, len(xv), 256)])
    accuracy = float((pred == yv).float().mean())
    seconds = time.time() - start
    torch.save(dict(state_dict=backbone.state_dict(),
                    meta=dict(task='photo_digit_crops: 10 digits + background, 32 px',
                              num_train=num_train, epochs=epochs, seed=seed,
                              val_accuracy=accuracy, seconds=round(seconds, 1))), out_path)
    print_log(f'pretrain: held-out accuracy {accuracy:.3f} ({seconds:.0f} s) -> {out_path}',
              logger=logger)
    return dict(val_accuracy=accuracy, seconds=seconds, path=out_path)
