"""Every change the plugin makes to another library's behaviour, in one place.

Importing :mod:`mmnorm_plugin` calls :func:`install`; :func:`uninstall` restores every original
it replaced (a test installs, uninstalls and checks each one is back). Registrations are
mmengine's and mmdet's own extension points and stay; everything else is listed here, with why
no extension point does the job.

=====  ==============================================  ==========================================
 #     what changes, where                             why, and why not an extension point
=====  ==============================================  ==========================================
 1     ``build_func`` of mmengine's root ``MODELS``    every ``norm_cfg`` of a model is checked
       and of its child registries (mmdet's, and       before the model is built, with messages
       children created later copy it):                that name the config path and the fix
       :func:`~.validation.norm_cfg.install_build_     (:func:`~.validation.validate_norm_cfgs`).
       validation`                                     mmengine runs no hook before a model build,
                                                       and ``init_detector``/``DetInferencer``
                                                       build outside any Runner.
 2     ``convert_sync_batchnorm`` /                    mmengine's ``sync_bn`` conversion would
       ``revert_sync_batchnorm`` as read by            silently turn every plugin norm into
       ``mmengine.runner.runner``,                     ``SyncBatchNorm`` (and back into plain
       ``mmengine._strategy.distributed``,             BN); the guards convert CBN/BGN/BKN to
       ``mmengine._strategy.single_device``,           their synced variants instead
       ``mmdet.apis.inference``,                       (:mod:`.distributed.sync_bn`). The Runner
       ``mmdet.apis.det_inferencer``: only the         calls them inside ``__init__`` and
       callers' references, never mmengine's own       ``wrap_model``, before any hook runs.
       functions
 3     a ``torch.optim`` step post-hook, registered    CBN's iterations end at optimizer steps
       when the first CBN is built                     (:mod:`.norms.iteration_clock`); torch's
       (:func:`torch.optim.optimizer.register_         own extension point, process-wide by
       optimizer_step_post_hook`)                      design, a Python call per step.
 4     a ``warnings`` filter for mmengine's            mmengine imports ``pkg_resources`` at
       ``pkg_resources is deprecated`` message         import, and setuptools warns on every
                                                       command; only that message is hidden.
 5     the ``Config`` name in *our* runpy copy of      configs are checked and converted before
       mmdet's ``tools/train.py``/``test.py``          mmdet's ``main`` runs; mmdet's modules are
       (:mod:`.apis.mmdet_tools`)                      untouched, so nothing to undo here.
 6     in runs of our tools only, hooks that change    checkpoints load through the guarded
       what a Runner loads and saves:                  scheme (never executing file content) and
       ``GuardedCheckpointLoadHook`` rewrites          are written atomically with a checksum;
       ``runner._load_from`` and ``Pretrained``        mmengine has no public way to choose the
       names in memory, ``SafeCheckpointHook``         loader of a Runner's loads, nor to write a
       subclasses ``CheckpointHook``; in               checkpoint through a temporary file; its
       distributed runs ``RankZeroLoggerHook``         ``LoggerHook`` writes the test metrics
       subclasses ``LoggerHook``                       file from every rank at once, which can
       (:mod:`.engine`)                                leave it unreadable. Added to the config
                                                       by our tools, nothing global.
 7     in runs that set ``compile`` (our tools add it  the norms find their producing conv
       then; configs may list it), a hook that         through forward hooks, and CBN/BKN learn
       changes how the Runner's first step runs:       their call sites and layer chains in an
       ``CompileNormsHook`` taps the model's convs     eager forward; mmengine compiles
       (forward hooks) and, for one iteration,         ``train_step`` after the hooks'
       replaces the compiled ``model.train_step``      ``before_run`` and offers no way to run
       mmengine set by an eager call under             one step eager. The eager call puts
       ``torch.compiler.set_stance('force_eager')``    mmengine's step back before it runs, and
       (:mod:`.engine.compile_norms`)                  the stance is restored on exit: nothing
                                                       global stays changed.
=====  ==============================================  ==========================================

Registered, not patched: the norm and conv layers in mmengine's root ``MODELS``, the XBN
backbones in mmdet's ``MODELS``, the runner hooks in ``HOOKS``, the file backend
``'atomic_local'`` and the checkpoint scheme ``mmnorm-guarded://`` of mmengine's
``CheckpointLoader`` (:mod:`.engine.guarded_loading`: only paths our tools rewrite to it load
through it). mmengine cannot unregister a name, so these stay after :func:`uninstall` (all are
names no other library uses).
"""
import warnings
from typing import Dict

__all__ = ['install', 'uninstall', 'installed', 'filter_import_warnings']

_PKG_RESOURCES = r'pkg_resources is deprecated as an API'
_state: Dict[str, bool] = dict(installed=False)


def filter_import_warnings() -> None:
    """Hide setuptools' ``pkg_resources`` deprecation warning that importing mmengine emits
    (row 4). Called before anything imports mmengine; idempotent."""
    if not any(_is_ours(f) for f in warnings.filters):
        warnings.filterwarnings('ignore', message=_PKG_RESOURCES, category=UserWarning)


def _is_ours(entry) -> bool:
    message = entry[1]
    return entry[0] == 'ignore' and getattr(message, 'pattern', None) == _PKG_RESOURCES


def install() -> None:
    """Make rows 1, 2 and 4 (row 3 follows the first CBN); idempotent."""
    from .distributed.sync_bn import install_sync_bn_guard
    from .validation.norm_cfg import install_build_validation
    filter_import_warnings()
    install_sync_bn_guard()
    install_build_validation()
    _state['installed'] = True


def uninstall() -> None:
    """Restore every original :func:`install` replaced, and remove row 3's step hook (a CBN
    built later registers it again); idempotent."""
    from .distributed.sync_bn import uninstall_sync_bn_guard
    from .norms.iteration_clock import remove_step_hook
    from .validation.norm_cfg import uninstall_build_validation
    uninstall_build_validation()
    uninstall_sync_bn_guard()
    remove_step_hook()
    warnings.filters[:] = [f for f in warnings.filters if not _is_ours(f)]
    warnings._filters_mutated()
    _state['installed'] = False


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _state['installed']
