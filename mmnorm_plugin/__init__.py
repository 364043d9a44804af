"""mmnorm_plugin: small-batch normalization layers and XBNBlock backbones for MMDetection 3.x.

Importing the package registers everything (configs do it with
``custom_imports = dict(imports=['mmnorm_plugin'], allow_failed_imports=False)``):

* norm layers ``CBN``, ``MABN``, ``BGN``, ``BKN``, their cross-GPU synced variants ``SyncCBN``,
  ``SyncBGN``, ``SyncBKN``, and the conv layer ``CenConv2d`` in mmengine's
  root ``MODELS`` registry, where ``mmcv.cnn.build_norm_layer``/``build_conv_layer`` find them
  from any default scope (mmdet, mmseg, mmpretrain or none);
* backbones ``XBNResNet`` and ``XBNResNeXt`` in ``mmdet.registry.MODELS``;
* runner hooks ``SafeCheckpointHook``, ``WeightsOnlyCheckpointHook``,
  ``GuardedCheckpointLoadHook``, ``CBNBurnInHook`` and ``PreciseNormHook`` in mmengine's
  ``HOOKS``, the file backend ``'atomic_local'`` and the checkpoint scheme
  ``mmnorm-guarded://``;
* a check of every ``norm_cfg`` before a model is built (:func:`validate_norm_cfgs`, run by the
  model registries' build function);
* guards around mmengine's ``sync_bn`` conversion and its revert, which turn the plugin norms
  into their synced variants (and back) instead of silently into ``SyncBatchNorm`` (MABN, which
  has none, is kept; see :mod:`mmnorm_plugin.distributed.sync_bn`).

Importing it does **not** change ``torch.load``: our tools load checkpoints one at a time
through :mod:`mmnorm_plugin.checkpoint.loading` and the ``mmnorm-guarded://`` scheme it adds to
mmengine's ``CheckpointLoader`` (:mod:`mmnorm_plugin.engine.guarded_loading`; other names load
as before); every other caller keeps torch's weights-only defaults (docs/checkpoint_safety.md).
"""
from .version import __version__
from . import norms  # noqa: F401  (registers the norm and conv layers)
from . import models  # noqa: F401  (registers the backbones)
from . import engine  # noqa: F401  (registers the runner hooks and the atomic file backend)
from .validation.norm_cfg import install_build_validation, validate_norm_cfgs
from .distributed.sync_bn import install_sync_bn_guard

install_sync_bn_guard()
install_build_validation()

__all__ = ['__version__', 'validate_norm_cfgs']
