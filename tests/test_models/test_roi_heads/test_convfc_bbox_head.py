"""Shared4Conv1FCLastReLUBBoxHead: one ReLU after the fourth conv, mmdet-compatible state."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.roi_heads.bbox_heads import Shared4Conv1FCBBoxHead
from mmdet.registry import MODELS

import mmnorm_plugin  # noqa: F401  (registers the head)
from mmnorm_plugin.models.roi_heads import Shared4Conv1FCLastReLUBBoxHead

CFG = dict(in_channels=8, conv_out_channels=8, fc_out_channels=16, roi_feat_size=7,
           num_classes=3)


def _heads(norm_cfg):
    torch.manual_seed(0)
    ours = MODELS.build(dict(type='Shared4Conv1FCLastReLUBBoxHead', norm_cfg=norm_cfg, **CFG))
    ref = Shared4Conv1FCBBoxHead(norm_cfg=norm_cfg, **CFG)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


def _shared_features(head, x):
    for conv in head.shared_convs:
        x = conv(x)
    return x


@pytest.mark.parametrize('norm_cfg', [None, dict(type='GN', num_groups=4)])
def test_single_relu_after_fourth_conv(norm_cfg):
    ours, ref = _heads(norm_cfg)
    assert isinstance(ours, Shared4Conv1FCLastReLUBBoxHead)
    ours.eval()
    x = torch.randn(5, 8, 7, 7)
    with torch.no_grad():
        # the head's function, written out: conv (+ norm) four times, then one ReLU
        expected = x
        for conv in ours.shared_convs:
            expected = conv.conv(expected)
            if conv.with_norm:
                expected = conv.norm(expected)
        expected = F.relu(expected)
        got = _shared_features(ours, x)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        # mmdet's head with the same weights applies a ReLU after every conv: different function
        assert not torch.allclose(_shared_features(ref, x), got, atol=1e-4)
        # the inner convs pass negative values on (no ReLU between them)
        inner = ours.shared_convs[0](x)
        assert (inner < 0).any()
        assert (ours.shared_convs[3](ours.shared_convs[2](ours.shared_convs[1](inner))) >= 0).all()


def test_only_the_last_conv_has_an_activation():
    ours, _ = _heads(dict(type='GN', num_groups=4))
    assert [c.with_activation for c in ours.shared_convs] == [False, False, False, True]
    assert [hasattr(c, 'activate') for c in ours.shared_convs] == [False, False, False, True]
    assert ours.shared_convs[0].with_norm  # the norm stays on every conv


def test_state_dict_matches_mmdet_head_and_predicts():
    ours, ref = _heads(None)
    assert list(ours.state_dict()) == list(ref.state_dict())
    cls_score, bbox_pred = ours(torch.randn(4, 8, 7, 7))
    assert cls_score.shape == (4, 4) and bbox_pred.shape == (4, 12)
    (cls_score.sum() + bbox_pred.sum()).backward()
    assert ours.shared_convs[0].conv.weight.grad.abs().sum() > 0


def test_empty_rois():
    ours, _ = _heads(dict(type='GN', num_groups=4))
    cls_score, bbox_pred = ours(torch.zeros(0, 8, 7, 7))
    assert cls_score.shape == (0, 4) and bbox_pred.shape == (0, 12)
