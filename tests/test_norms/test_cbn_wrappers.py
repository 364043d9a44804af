"""CBN inside the wrappers that copy or average a model: EMA, SWA, deepcopy, .to() after load.

They copy the model before its first training step, when CBN's derivative history does not
exist yet (its shape depends on the producing conv). mmengine's averaged models pair buffers by
order (``update_buffers=False``) or alias the whole state dict at construction
(``update_buffers=True``), so that history must not be a buffer that changes shape later.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.iteration_clock import end_iteration

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py')


def _detector():
    from mmdet.registry import MODELS as DET_MODELS
    cfg = Config.fromfile(DEMO)
    init_default_scope('mmdet')
    model_cfg = copy.deepcopy(cfg.model)
    for path in ('backbone', 'neck'):
        model_cfg[path].norm_cfg.burnin_iters = 0
    model_cfg.roi_head.bbox_head.norm_cfg.burnin_iters = 0
    model_cfg.train_cfg.rpn_proposal.max_per_img = 64
    model_cfg.train_cfg.rcnn.sampler.num = 32
    model = DET_MODELS.build(model_cfg)
    model.init_weights()
    return model


def _train_step(model, optimizer, seed):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)], num_items=[2],
                            num_classes=3)
    model.train()
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


@pytest.mark.parametrize('averaged', [
    dict(type='ExpMomentumEMA', update_buffers=False),
    dict(type='ExpMomentumEMA', update_buffers=True),
    dict(type='StochasticWeightAverage', update_buffers=False),
])
def test_averaged_model_of_a_cbn_detector_trains(averaged):
    model = _detector()
    ema = MODELS.build(dict(averaged, model=model))  # as EMAHook.before_run: before step 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(3):
        assert torch.isfinite(_train_step(model, optimizer, step))
        ema.update_parameters(model)
    layers = [m for m in model.modules() if isinstance(m, CBN)]
    assert layers and all(m.window_active for m in layers)
    assert sum(m.hist_var_grad.numel() > 0 for m in layers) > len(layers) // 2
    ema.eval()
    with torch.no_grad():  # the averaged copy evaluates (eval-mode CBN = BN)
        from mmdet.testing import demo_mm_inputs
        data = ema.module.data_preprocessor(
            demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)], num_classes=3), False)
        ema.module(**data, mode='predict')
    # the averaged model's checkpoint loads into a fresh detector
    fresh = _detector()
    fresh.load_state_dict(ema.module.state_dict(), strict=True)


def test_deepcopy_before_first_step_and_to_after_load():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2)
    twin = copy.deepcopy(cbn)  # before any forward: no derivative history yet
    for _ in range(3):
        cbn(conv(torch.randn(2, 3, 6, 6)))
        with torch.no_grad():  # an optimizer step: the next call is the next iteration
            conv.weight.add_(0.01)
        end_iteration()
    assert cbn.hist_var_grad.shape == (1, 4, 2, 27) and twin.hist_var_grad.numel() == 0
    twin.load_state_dict(cbn.state_dict())  # sized from the checkpoint
    assert torch.equal(twin.hist_var_grad, cbn.hist_var_grad)
    assert twin.hist_var_grad.data_ptr() != cbn.hist_var_grad.data_ptr()
    twin.to(torch.float64)
    assert twin.hist_var_grad.dtype == twin.hist_mean_grad.dtype == torch.float64
    y = twin(conv.double()(torch.randn(2, 3, 6, 6, dtype=torch.float64)))
    assert torch.isfinite(y).all() and twin.hist_len == 2
    # derivative history is state, not a buffer: DDP does not broadcast it, EMA does not pair it
    assert 'hist_var_grad' in cbn.state_dict()
    assert 'hist_var_grad' not in dict(cbn.named_buffers())
