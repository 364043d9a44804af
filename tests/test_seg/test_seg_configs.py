"""Every config under configs/seg loads through ``mmseg::`` bases, puts its norm where its name
says (backbone, decode head, auxiliary head), builds, trains one step and predicts on CPU.

Configs added later are covered automatically. Pretrained weights are switched off (no
network); inputs are 2 random 32x64 images with random labels (a few ignored pixels), the
data preprocessor's size shrunk to match (the R-50 configs pad to 512x1024).
"""
import copy
import glob
import os.path as osp
import re

import pytest
import torch

pytest.importorskip('mmseg', reason='mmsegmentation is the .[seg] extra')

from mmengine.config import Config  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from torch import nn  # noqa: E402

import mmnorm_plugin  # noqa: F401,E402
from mmnorm_plugin.models.layers import CenConv2d  # noqa: E402
from mmnorm_plugin.norms.mabn import MABN  # noqa: E402
from mmnorm_plugin.validation.norm_cfg import validate_norm_cfgs  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', 'seg', '*.py')))
# the norm tag of a config name (`<arch>_<backbone>_<norm>-all_...`) -> the registered norm it
# must put in the backbone and both heads
NORMS = {'syncbn': 'SyncBN', 'bn': 'BN', 'gn': 'GN', 'cbn': 'CBN', 'mabn': 'MABN', 'bgn': 'BGN',
         'bkn': 'BKN'}
PARTS = ('backbone', 'decode_head', 'auxiliary_head')


def _norm_class(config):
    tag = re.match(r'[^_]+_[^_]+_([a-z]+)-all_', osp.basename(config))
    assert tag and tag.group(1) in NORMS, f'{config}: no known <norm>-all tag in the name'
    from mmengine.registry import MODELS
    return MODELS.get(NORMS[tag.group(1)])


def _no_pretrained(model_cfg):
    model_cfg.pretrained = None
    model_cfg.backbone.init_cfg = None


def _inputs(num_classes, height=32, width=64, ignored=True):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8))
        labels = torch.randint(0, num_classes, (1, height, width), generator=gen)
        if ignored:
            labels[:, :2] = 255  # ignored pixels, as mmseg's padding and Cityscapes' void
        sample = SegDataSample(gt_sem_seg=PixelData(data=labels))
        sample.set_metainfo(dict(img_shape=(height, width), ori_shape=(height, width),
                                 pad_shape=(height, width)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_configs_found():
    names = {osp.basename(c) for c in CONFIGS}
    for arch in ('deeplabv3', 'pspnet'):
        for norm in ('syncbn', 'bn', 'cbn', 'mabn', 'bgn', 'bkn', 'gn'):
            assert f'{arch}_r50-d8_{norm}-all_4xb2-80k_cityscapes-512x1024.py' in names


@pytest.mark.parametrize('config', CONFIGS)
def test_seg_config_builds_trains_and_predicts(config):
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, config))
    assert 'mmnorm_plugin' in cfg.get('custom_imports', {}).get('imports', []), \
        f'{config} does not import the plugin through custom_imports'
    assert cfg.default_scope == 'mmseg'
    assert dict(type='WeightsOnlyCheckpointHook') in cfg.custom_hooks
    init_default_scope('mmseg')
    validate_norm_cfgs(cfg.model)
    model_cfg = copy.deepcopy(cfg.model)
    _no_pretrained(model_cfg)
    model_cfg.data_preprocessor.size = (32, 64)
    model = MODELS.build(model_cfg)
    model.init_weights()

    norm_class = _norm_class(config)
    for part in PARTS:
        norms = [m for m in getattr(model, part).modules()
                 if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))]
        assert norms and all(type(m) is norm_class for m in norms), \
            (part, sorted({type(m).__name__ for m in norms}))
    if norm_class is MABN:  # every conv that feeds a norm centralizes its weights
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        plain = [m for m in convs if not isinstance(m, CenConv2d)]
        # only the classifiers (conv_seg) stay plain: no norm follows them
        assert len(plain) == 2 and len(convs) > 50

    # a single process trains without a process group: SyncBN runs as BN there (the Runner's
    # revert); the plugin norms are not SyncBatchNorm and stay as they are
    model = revert_sync_batchnorm(model)
    model.train()
    # mmseg 1.2.2's CrossEntropyLoss indexes its class_weight with every label, 255 included
    # (IndexError): a config with class_weight trains only on maps without ignored pixels,
    # which the tiny config's set is (crops of its image size, no clashing masks)
    weighted = model_cfg.decode_head.loss_decode.get('class_weight') is not None
    packed = _inputs(model_cfg.decode_head.num_classes, ignored=not weighted)
    data = model.data_preprocessor(copy.deepcopy(packed), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    for part in PARTS:
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(copy.deepcopy(packed), False)
        results = model(**data, mode='predict')
    assert len(results) == 2
    for result in results:
        assert result.pred_sem_seg.data.shape == (1, 32, 64)
        assert torch.isfinite(result.seg_logits.data).all()


def test_bases_are_mmseg_own_configs():
    """The two bases are mmseg's Cityscapes R-50 configs, read from the installed wheel: 2 crops
    of 512x1024 per GPU, SyncBN, SGD lr 0.01, poly LR over 80k iterations."""
    for arch in ('deeplabv3', 'pspnet'):
        path = osp.join(ROOT, 'configs', 'seg', f'{arch}_r50-d8_syncbn-all_4xb2-80k_cityscapes-512x1024.py')
        text = open(path).read()
        base = re.search(r"_base_ = '([^']+)'", text).group(1)
        # mmengine reads a package-scoped base only when it looks like scope::dir/file
        assert re.match(r'\w*::\w*/\w*', base) and base.startswith('mmseg::'), base
        cfg = Config.fromfile(path)
        assert cfg.train_dataloader.batch_size == 2 and cfg.crop_size == (512, 1024)
        assert cfg.model.backbone.type == 'ResNetV1c' and cfg.model.backbone.depth == 50
        assert cfg.model.backbone.norm_eval is False
        for part in PARTS:
            assert cfg.model[part].norm_cfg.type == 'SyncBN'
        assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.01, momentum=0.9,
                                                   weight_decay=0.0005)
        assert cfg.param_scheduler[0].type == 'PolyLR' and cfg.param_scheduler[0].end == 80000
        assert cfg.train_cfg.max_iters == 80000


def test_resnet_v1c_bn_checkpoint_converts_for_the_mabn_configs():
    """The MABN configs load ``resnet_to_mabn.py``'s conversion of the BN ResNetV1c: every key
    of mmseg's ResNetV1c (deep stem included) maps; at most MABN's ring buffers start empty."""
    from mmseg.registry import MODELS
    from mmnorm_plugin.model_converters.mabn import convert_resnet_to_mabn
    init_default_scope('mmseg')
    small = dict(type='ResNetV1c', depth=18, stem_channels=16, base_channels=16,
                 dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), contract_dilation=True)
    bn = MODELS.build(dict(small, norm_cfg=dict(type='BN')))
    for m in bn.modules():  # non-trivial statistics, so a dropped or misplaced one would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    checkpoint = dict(state_dict={**bn.state_dict(), 'fc.weight': torch.zeros(10, 128)})
    mabn = MODELS.build(dict(small, norm_cfg=dict(type='MABN'),
                             conv_cfg=dict(type='CenConv2d')))
    result = mabn.load_state_dict(convert_resnet_to_mabn(checkpoint), strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith(('chi2_history', 'psi_history')) for k in result.missing_keys)
    assert type(mabn.stem[1]) is MABN
    assert torch.equal(mabn.stem[1].running_var, bn.stem[1].running_var)
    weight = mabn.stem[0].weight
    assert torch.allclose(weight.mean(dim=(1, 2, 3)), torch.zeros(weight.shape[0]), atol=1e-6)
