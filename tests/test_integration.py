"""mmnorm_plugin.integration: every change to another library is listed, install() is
idempotent and uninstall() restores each original."""
import warnings

import pytest
import torch
from mmengine.registry import MODELS, Registry

import mmnorm_plugin  # noqa: F401 (installed on import)
from mmnorm_plugin import integration
from mmnorm_plugin.norms.cbn import CBN

_GUARDED = {'mmengine.runner.runner': ('convert_sync_batchnorm', 'revert_sync_batchnorm'),
            'mmengine._strategy.distributed': ('convert_sync_batchnorm', ),
            'mmengine._strategy.single_device': ('revert_sync_batchnorm', ),
            'mmdet.apis.inference': ('revert_sync_batchnorm', ),
            'mmdet.apis.det_inferencer': ('revert_sync_batchnorm', )}


def _snapshot():
    import importlib
    from mmdet.registry import MODELS as DET_MODELS
    from torch.optim.optimizer import _global_optimizer_post_hooks
    names = {(m, n): getattr(importlib.import_module(m), n)
             for m, ns in _GUARDED.items() for n in ns}
    return dict(names=names, root=MODELS.build_func, det=DET_MODELS.build_func,
                hooks=dict(_global_optimizer_post_hooks), filters=list(warnings.filters))


@pytest.fixture
def restored():
    yield
    integration.install()  # the rest of the suite runs with the plugin installed


def test_uninstall_restores_every_original_and_install_is_idempotent(restored):
    assert integration.installed()
    CBN(4)  # row 3: the first CBN registers the optimizer-step hook
    integration.install()  # pytest gives each test fresh warning filters: add ours to them
    patched = _snapshot()
    integration.install()
    assert _snapshot() == patched  # idempotent: nothing wrapped twice, no second filter
    integration.uninstall()
    original = _snapshot()
    assert not integration.installed()
    for key, fn in original['names'].items():
        assert not getattr(fn, '_mmnorm_guard', False), key
        assert patched['names'][key].__wrapped__ is fn  # exactly what was replaced
    for key in ('root', 'det'):
        assert not getattr(original[key], '_mmnorm_validating', False)
        assert patched[key].__wrapped__ is original[key]
    assert len(original['hooks']) == len(patched['hooks']) - 1
    assert len(original['filters']) == len(patched['filters']) - 1
    integration.uninstall()
    assert _snapshot() == original  # idempotent too
    integration.install()
    assert getattr(_snapshot()['root'], '_mmnorm_validating', False)


def test_a_registry_created_while_installed_is_restored_too(restored):
    child = Registry('model', parent=MODELS, scope='mmnorm_test_child')
    assert getattr(child.build_func, '_mmnorm_validating', False)  # copied from the root
    integration.uninstall()
    assert not getattr(child.build_func, '_mmnorm_validating', False)


def test_without_the_plugin_a_bad_norm_cfg_is_not_checked_and_with_it_it_is(restored):
    from mmdet.registry import MODELS as DET_MODELS
    cfg = dict(type='ResNet', depth=18, norm_cfg=dict(type='BGN', num_groups=7))
    with pytest.raises(Exception, match='num_groups'):
        DET_MODELS.build(cfg)
    integration.uninstall()
    with pytest.raises(Exception) as raw:
        DET_MODELS.build(cfg)
    assert "model config" not in str(raw.value)  # torch/mmcv's own error, not our check


def test_the_step_hook_comes_back_with_the_next_cbn(restored):
    from torch.optim.optimizer import _global_optimizer_post_hooks
    layer = CBN(4)
    integration.uninstall()
    before = len(_global_optimizer_post_hooks)
    layer2 = CBN(4)
    assert len(_global_optimizer_post_hooks) == before + 1
    ended = []
    layer2._end_iteration = lambda: ended.append(1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    opt.step()
    assert ended and layer is not None
