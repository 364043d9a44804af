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

Every change to another library's behaviour (the last two, CBN's optimizer-step hook, a
warnings filter) is listed in :mod:`mmnorm_plugin.integration`, whose ``uninstall()`` restores
the originals.

Importing it does **not** change ``torch.load``: our tools load checkpoints one at a time
through :mod:`mmnorm_plugin.checkpoint.loading` and the ``mmnorm-guarded://`` scheme it adds to
mmengine's ``CheckpointLoader`` (:mod:`mmnorm_plugin.engine.guarded_loading`; other names load
as before); every other caller keeps torch's weights-only defaults (docs/checkpoint_safety.md).
"""
import importlib.util as _util
import sys as _sys

_missing = [m for m in ('torch', 'mmengine', 'mmcv', 'mmdet') if _util.find_spec(m) is None]
if _missing:  # a Python without the stack: say how to get one, not just "No module named"
    raise ModuleNotFoundError(
        f"mmnorm_plugin needs {', '.join(_missing)}, which {_sys.executable} does not have: run "
        '`make install` (or `bash tools/setup_env.sh`) in the checkout, then use '
        '.venv/bin/python or `source .venv/bin/activate`', name=_missing[0])

from . import integration  # noqa: E402
from .version import __version__  # noqa: E402

integration.filter_import_warnings()  # before anything imports mmengine
from . import norms  # noqa: F401,E402  (registers the norm and conv layers)
from . import models  # noqa: F401,E402  (registers the backbones)
from . import engine  # noqa: F401,E402  (registers the runner hooks and the atomic file backend)
from .validation.norm_cfg import validate_norm_cfgs  # noqa: E402

integration.install()  # every change to another library's behaviour: mmnorm_plugin.integration

__all__ = ['__version__', 'validate_norm_cfgs']
