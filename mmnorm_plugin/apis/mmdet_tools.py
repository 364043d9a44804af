"""Run mmdet 3.3's own ``tools/train.py`` / ``tools/test.py`` with the plugin loaded.

The pip wheel of mmdet ships its tools under ``mmdet/.mim/tools``; running them (rather than
keeping copies) keeps our CLI identical to mmdet's — ``--work-dir``, ``--amp``,
``--auto-scale-lr``, ``--resume``, ``--cfg-options``, ``--launcher``, ``--out``, ``--show-dir``,
``--tta`` ... — for every mmdet release we support. A config whose ``default_scope`` names
another OpenMMLab codebase in :data:`TOOL_PACKAGES` (``'mmpretrain'``: the ImageNet configs of
``configs/pretrain``; ``'mmseg'``: the segmentation configs of ``configs/seg``) runs that
codebase's own tools the same way (``mmpretrain/.mim/tools``, ``mmseg/.mim/tools``, with their
flags, e.g. mmpretrain's ``--no-validate``, mmseg's ``--show-dir``), with every check and hook
below. The codebase is read
from the config named first on the command line, as every tool's usage line puts it.

Before handing over, a config, checkpoint or ``--resume`` path that does not exist ends the run
with one line, and the config (with ``--cfg-options``) is loaded once and checked:

* every norm config (:func:`~mmnorm_plugin.validation.norm_cfg.validate_norm_cfgs`): missing type,
  unknown type or argument, MABN after a plain conv;
* ``train``: ``cfg.sync_bn`` with a plugin norm that has no synced variant is refused
  (:func:`~mmnorm_plugin.distributed.sync_bn.check_sync_bn_cfg`);
* ``test``: the checkpoint's keys and shapes (and its saved config) against the model built
  from the config; a checkpoint that leaves model weights unset is refused
  (``--allow-checkpoint-mismatch`` evaluates anyway).

Checkpoints are written and read through
:class:`~mmnorm_plugin.engine.safe_checkpoint.SafeCheckpointHook`, which the configs'
``CheckpointHook`` becomes: atomic writes, a SHA-256 in every checkpoint, and ``--resume`` walks
back past checkpoints that do not load or verify. A damaged checkpoint named explicitly
(``--resume PATH``, ``tools/test.py``'s) stops the run with one line. In distributed runs, a
rank that loses another one stops with one line too
(:func:`~mmnorm_plugin.apis.dist.lost_peer_message`).

Every checkpoint the run loads (``--resume``, auto-resume, ``load_from``, ``tools/test.py``'s
checkpoint, ``init_cfg`` ``Pretrained`` files) goes through the ``mmnorm-guarded://`` loader of
:mod:`~mmnorm_plugin.engine.guarded_loading` (the config gets
:class:`~mmnorm_plugin.engine.GuardedCheckpointLoadHook`): bytes read once, zip CRCs and
checksum verified on what is loaded, torch's weights-only unpickler with validating stand-ins
for old-format objects, one load at a time, and ``meta`` text mmengine would execute removed
first (see ``docs/checkpoint_safety.md``). A file that needs more stops the run with one line
naming it and what was refused; ``--unsafe-load PATH`` trusts that one file (repeatable), never
the other loads of the run.

mmdet's ``main`` then reads the config itself. It is handed a ``Config`` whose ``fromfile``
adds ``custom_imports=dict(imports=['mmnorm_plugin'], allow_failed_imports=False)`` to configs
that lack it, :class:`~mmnorm_plugin.engine.WeightsOnlyCheckpointHook` (checkpoints that load
with torch's weights-only default, in mmdet's APIs too), for a training run that sets
``compile`` (in the file or ``--cfg-options``) :class:`~mmnorm_plugin.engine.CompileNormsHook`
(the norms compile instead of breaking the graph, in configs of every scope: mmdet's,
mmpretrain's, mmseg's), for a distributed run
:class:`~mmnorm_plugin.engine.RankZeroLoggerHook` (one process writes the test metrics file)
and, for a CPU ``--launcher pytorch`` run, the CPU-capable DDP wrapper.
This is
the one place every later consumer reads from: the Runner dumps ``cfg`` into the work dir and
``cfg.pretty_text`` into ``checkpoint['meta']['cfg']``, so the saved config and checkpoint load
in ``init_detector``, ``DetInferencer`` and every mmdet tool without the user importing the
plugin. Patching ``mmengine.config.Config`` globally instead would also rewrite configs of
unrelated code in the same process; swapping the name in the tool's own namespace does not.
"""
import contextlib
import copy
import importlib
import os.path as osp
import pickle
import runpy
import sys
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import mmdet
from mmengine.config import Config

from ..validation.norm_cfg import norm_cfg_types, validate_norm_cfgs
from ..distributed.sync_bn import check_sync_bn_cfg

__all__ = ['load_mmdet_tool', 'run_mmdet_tool', 'add_plugin_import', 'check_test_checkpoint',
           'tool_package', 'PLUGIN_IMPORT', 'TOOL_PACKAGES']

MMDET_TOOLS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools')
PLUGIN_IMPORT = dict(imports=['mmnorm_plugin'], allow_failed_imports=False)
ALLOW_MISMATCH = '--allow-checkpoint-mismatch'
#: ``default_scope`` -> the package whose ``.mim/tools`` run configs of that scope; configs of
#: any other scope (or none) run mmdet's, as before.
TOOL_PACKAGES = {'mmdet': 'mmdet', 'mmpretrain': 'mmpretrain', 'mmseg': 'mmseg'}
_INSTALL = {'mmdet': 'pip install mmdet==3.3.0',
            # not `pip install .[pretrain]`: torchvision must be the build of the installed torch
            'mmpretrain': 'MMNORM_EXTRAS=pretrain make install',
            'mmseg': 'MMNORM_EXTRAS=seg make install'}


def tool_package(scope: Optional[str]) -> str:
    """The package whose tools run a config of ``default_scope`` ``scope``."""
    return TOOL_PACKAGES.get(scope or 'mmdet', 'mmdet')


def load_mmdet_tool(name: str, scope: Optional[str] = 'mmdet') -> Dict[str, Callable]:
    """Return the namespace (``parse_args``, ``main``...) of ``<package>/.mim/tools/<name>.py``,
    the package being mmdet or, for a config of ``default_scope`` ``scope``, the codebase of
    :data:`TOOL_PACKAGES`.

    ``main.__globals__`` is the namespace ``main`` really reads (runpy returns a copy).
    """
    package = tool_package(scope)
    try:
        module = importlib.import_module(package)
        # what the tool's Runner imports for the scope (mmpretrain needs torchvision there)
        importlib.import_module(f'{package}.utils').register_all_modules(False)
    except ImportError as err:
        raise ImportError(f'{name}.py: configs of default_scope={scope!r} run in {package}, '
                          f'which does not import ({err}); install it: '
                          f'`{_INSTALL[package]}`') from err
    path = osp.join(osp.dirname(module.__file__), '.mim', 'tools', f'{name}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: {package} {module.__version__} was installed without its '
            f'tools (install its PyPI wheel: `{_INSTALL[package]}`).')
    return runpy.run_path(path, run_name=f'{package}_tools_{name}')


def add_plugin_import(cfg: Config) -> Config:
    """Make ``cfg`` import the plugin when it is loaded again (dumped config, checkpoint meta)."""
    custom = cfg.get('custom_imports')
    if custom is None:
        cfg.custom_imports = dict(imports=list(PLUGIN_IMPORT['imports']),
                                  allow_failed_imports=False)
    else:
        imports = custom.get('imports', [])
        imports = [imports] if isinstance(imports, str) else list(imports)
        if 'mmnorm_plugin' not in imports:
            custom['imports'] = imports + ['mmnorm_plugin']
    return cfg


def add_guarded_loading(cfg: Config) -> Config:
    """Make the Runner load every checkpoint through the guarded loader
    (:class:`~mmnorm_plugin.engine.GuardedCheckpointLoadHook`)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'GuardedCheckpointLoadHook' for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='GuardedCheckpointLoadHook')]
    return cfg


def add_weights_only_checkpoints(cfg: Config) -> Config:
    """Make the Runner write checkpoints that load with torch's weights-only default and no
    allow-list (:class:`~mmnorm_plugin.engine.WeightsOnlyCheckpointHook`)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'WeightsOnlyCheckpointHook' for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='WeightsOnlyCheckpointHook')]
    return cfg


class _PluginConfig:
    """What mmdet's ``main`` sees as ``Config``: ``fromfile`` with the plugin's additions."""

    def __init__(self, distributed: bool, cpu_dist: bool, compile_norms: bool = False):
        self.distributed = distributed
        self.cpu_dist = cpu_dist
        self.compile_norms = compile_norms

    def fromfile(self, *args, **kwargs) -> Config:
        from ..engine.compile_norms import use_compile_norms_hook
        from ..engine.rank_zero_logger import use_rank_zero_logger
        from ..engine.safe_checkpoint import use_safe_checkpoint_hook
        from .dist import set_default_dist_timeout, use_cpu_ddp
        cfg = add_guarded_loading(add_weights_only_checkpoints(
            add_plugin_import(Config.fromfile(*args, **kwargs))))
        use_safe_checkpoint_hook(cfg)
        if self.compile_norms:
            use_compile_norms_hook(cfg)
        if self.distributed:
            set_default_dist_timeout(cfg)
            use_rank_zero_logger(cfg)
        if self.cpu_dist:
            use_cpu_ddp(cfg)
        return cfg

    def __getattr__(self, name):  # everything else is mmengine's Config
        return getattr(Config, name)


def check_test_checkpoint(cfg: Config, checkpoint_path: str, config_path: str = '',
                          allow_mismatch: bool = False) -> Optional[str]:
    """Compare ``checkpoint_path`` with the model of ``cfg``; raise or return a warning text.

    Raises :class:`~mmnorm_plugin.checkpoint.loading.CheckpointMismatch` when model weights would
    stay unset (missing keys, other shapes) unless ``allow_mismatch``; returns a warning text
    for lesser differences (extra keys, another saved config), ``None`` for a match. A file that
    does not load or fails its checksum raises
    :class:`~mmnorm_plugin.checkpoint.safety.DamagedCheckpoint` first.
    """
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

    from ..checkpoint.loading import (CheckpointMismatch, compare_checkpoint_with_model,
                                    format_mismatch)
    from ..checkpoint.safety import load_verified_checkpoint
    if not osp.isfile(checkpoint_path):  # URLs etc.: mmengine's loader reports those itself
        return None
    # a file that does not load, or whose checksum differs, raises DamagedCheckpoint here
    checkpoint = load_verified_checkpoint(checkpoint_path)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(copy.deepcopy(cfg.model))  # detectors edit their cfg while building
    report = compare_checkpoint_with_model(model, checkpoint, cfg.model)
    if not any(report.values()):
        return None
    text = format_mismatch(report, checkpoint_path, config_path or cfg.filename)
    fatal = bool(report['missing'] or report['shapes'])
    if fatal and not allow_mismatch:
        raise CheckpointMismatch(
            f'{text}\nFix: evaluate with the config the checkpoint was trained with (the '
            "Runner saved it as <work_dir>/<config name>.py and in checkpoint['meta']['cfg']), "
            f'or pass {ALLOW_MISMATCH} to evaluate anyway.')
    if fatal:
        return text + f'\n(evaluating anyway: {ALLOW_MISMATCH})'
    if report['unexpected'] or report['config']:
        return (text + '\nNo model weight is left unset, so evaluation goes on; make sure '
                'the difference is intended (e.g. a CBN checkpoint under its BN twin config).')
    return None


def _pop_flag(argv: List[str], flag: str) -> bool:
    found = flag in argv
    while flag in argv:
        argv.remove(flag)
    return found


def _pop_unsafe_load(argv: List[str]) -> List[str]:
    """The files named by ``--unsafe-load PATH`` / ``--unsafe-load=PATH`` (removed from
    ``argv``); the bare flag of earlier versions ends the run with one line."""
    from ..checkpoint.loading import UNSAFE_LOAD_FLAG as flag
    paths, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(flag + '='):
            paths.append(arg[len(flag) + 1:])
            del argv[i]
        elif arg == flag:
            if i + 1 == len(argv) or argv[i + 1].startswith('-') or not argv[i + 1]:
                raise SystemExit(
                    f'{flag} takes the checkpoint to trust: {flag} PATH (repeat it for more '
                    'files). It trusts that file only, not every load of the run.')
            paths.append(argv[i + 1])
            del argv[i:i + 2]
        else:
            i += 1
    for path in paths:
        if '://' not in path and not osp.isfile(osp.expanduser(path)):
            raise SystemExit(f'{flag} {path}: no such file')
    return paths


@contextlib.contextmanager
def _checkpoint_loading(trusted: Sequence[str]):
    """The files the user trusts, for the block; a refused or damaged file ends the run in one
    line (the loads themselves lock and scope their allow-list one at a time)."""
    from ..checkpoint.loading import trusted_checkpoints, unsafe_load_message
    from ..checkpoint.safety import DamagedCheckpoint
    with trusted_checkpoints(trusted):
        try:
            yield
        except pickle.UnpicklingError as err:
            raise SystemExit(unsafe_load_message(err)) from err
        except DamagedCheckpoint as err:
            raise SystemExit(str(err)) from err


@contextlib.contextmanager
def _lost_peers_end_the_run(timeout_s: float):
    """In a distributed run, an error meaning another rank is gone ends the run with one line."""
    from .dist import lost_peer_message
    try:
        yield
    except RuntimeError as err:
        message = lost_peer_message(err, timeout_s)
        if message is None:
            raise
        raise SystemExit(message) from err


def _scope_named_first(argv: Sequence[str]) -> Optional[str]:
    """``default_scope`` of the config the command line names first (every tool's usage line
    puts CONFIG first); ``'mmdet'`` when that is not a file (the tool's checks then say so)."""
    first = next((a for a in argv if not a.startswith('-')), None)
    if first is None or not osp.isfile(first):
        return 'mmdet'
    return Config.fromfile(first).get('default_scope', 'mmdet')


def _check_paths_exist(name: str, args) -> None:
    """End the run with one line for a mistyped path (mmengine would raise it from deep in
    ``Config.fromfile`` or the Runner's checkpoint loading, a long traceback for a typo)."""
    paths = [('config file', args.config)]
    if name == 'test':
        paths.append(('checkpoint', args.checkpoint))
    resume = getattr(args, 'resume', None)
    if isinstance(resume, str) and resume != 'auto':  # bare --resume means 'auto'
        paths.append(('checkpoint to resume', resume))
    for what, path in paths:
        if '://' not in path and not osp.isfile(path):  # URLs: mmengine downloads them
            raise SystemExit(f'{name}.py: {what} not found: {path}')


#: the project's generated sets, by the folder name of their data_root
_OUR_SETS = {'tiny_coco': 'make data', 'tiny_coco_hard': 'make data', 'photo_digits': 'make data'}


def _annotation_files(dataset) -> List[str]:
    """The annotation files a dataset config reads (wrappers such as RepeatDataset and
    ConcatDataset included); for a set listed from its folders (no ``ann_file``: mmseg's
    ``BaseSegDataset``), the folders of ``data_prefix``, each ending in a separator."""
    if isinstance(dataset, (list, tuple)):
        return [f for d in dataset for f in _annotation_files(d)]
    if not isinstance(dataset, dict):
        return []
    if 'dataset' in dataset or 'datasets' in dataset:
        return _annotation_files(dataset.get('dataset', dataset.get('datasets')))
    root = dataset.get('data_root') or ''
    ann_file = dataset.get('ann_file')
    if ann_file == '' or (ann_file is None and 'data_prefix' in dataset):
        prefix = dataset.get('data_prefix')
        folders = prefix.values() if isinstance(prefix, dict) else [prefix]
        return [osp.join(root, f, '') for f in folders
                if isinstance(f, str) and '://' not in root + f]
    if not isinstance(ann_file, str) or not ann_file or '://' in ann_file:
        return []
    return [osp.join(root, ann_file)]


def _check_data_exists(name: str, cfg) -> None:
    """End the run with one line naming a missing annotation file (or image/label folder), and
    the command that generates it for the project's own sets, before the Runner starts (mmengine
    would raise a bare FileNotFoundError after hundreds of log lines)."""
    loaders = ['train_dataloader', 'val_dataloader'] if name == 'train' else ['test_dataloader']
    for loader in loaders:
        for path in _annotation_files((cfg.get(loader) or {}).get('dataset')):
            if osp.exists(path):  # a folder's trailing separator: a file there is not it
                continue
            ours = [part for part in osp.normpath(path).split(osp.sep) if part in _OUR_SETS]
            if ours:
                hint = f'`{_OUR_SETS[ours[-1]]}` generates it'
            elif path.endswith(osp.sep):
                hint = "check the config's data_root and data_prefix"
            else:
                hint = "check the config's data_root and ann_file (COCO: docs/coco.md)"
            raise SystemExit(f'{name}.py: {loader} reads {path}, which does not exist: {hint}')


def run_mmdet_tool(name: str, argv: Optional[Sequence[str]] = None) -> None:
    """Check the config named on the command line, then run the tool ``name`` of its codebase
    (mmdet's; mmpretrain's or mmseg's for their ``default_scope``, see :data:`TOOL_PACKAGES`)."""
    import mmnorm_plugin  # noqa: F401  (registrations)
    from ..engine.compile_norms import compile_requested
    from .dist import (close_cpu_process_group, dist_timeout_s, init_cpu_process_group,
                       needs_cpu_dist)
    if argv is not None:
        sys.argv = [f'{name}.py', *argv]
    allow_mismatch = _pop_flag(sys.argv, ALLOW_MISMATCH) if name == 'test' else False
    trusted = _pop_unsafe_load(sys.argv)
    package = tool_package(_scope_named_first(sys.argv[1:]))
    try:
        tool = load_mmdet_tool(name, package)
    except ImportError as err:
        raise SystemExit(str(err)) from err
    args = tool['parse_args']()
    _check_paths_exist(name, args)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    if tool_package(scope) != package:  # options before CONFIG, or --cfg-options default_scope
        raise SystemExit(f'{name}.py: {args.config} runs in {tool_package(scope)} '
                         f"(default_scope={scope!r}) but was read as {package}'s: name the "
                         f'config first, `{name}.py CONFIG [options]`')
    distributed = args.launcher != 'none'
    if 'model' in cfg:
        validate_norm_cfgs(cfg.model, scope=scope)
        if name == 'train':
            if distributed:
                check_sync_bn_cfg(cfg, norm_cfg_types(cfg.model))
            elif cfg.get('sync_bn'):
                try:
                    check_sync_bn_cfg(cfg, norm_cfg_types(cfg.model))
                except ValueError as err:
                    warnings.warn(f'{err} (Not distributed: sync_bn is ignored by this run; '
                                  'a distributed launch would be refused.)')
    cpu_dist = needs_cpu_dist(args.launcher)
    if cpu_dist:
        # before anything else talks to torch.distributed; mmengine then finds the group
        init_cpu_process_group(cfg)
    # decided on the config with --cfg-options merged, which the tool's main merges only later
    compile_norms = name == 'train' and compile_requested(cfg)
    tool['main'].__globals__['Config'] = _PluginConfig(distributed, cpu_dist, compile_norms)
    lost_peers = (_lost_peers_end_the_run(dist_timeout_s(cfg)) if distributed
                  else contextlib.nullcontext())
    try:
        with lost_peers, _checkpoint_loading(trusted):
            if name == 'test' and 'model' in cfg:
                import torch.distributed as dist
                rank = dist.get_rank() if dist.is_initialized() else 0
                message = check_test_checkpoint(cfg, args.checkpoint, args.config,
                                                allow_mismatch)
                if message and rank == 0:
                    warnings.warn(message)
            # after the config's own errors, which a user fixes first and which need no data
            _check_data_exists(name, cfg)
            tool['main']()
            if cpu_dist:  # the gloo group we created is ours to close (why: the docstring);
                # here, so that a rank lost at the closing barrier ends the run in one line
                close_cpu_process_group(run_succeeded=True)
    finally:
        if cpu_dist:  # a failed run: no barrier (nothing left to do after a closed group)
            close_cpu_process_group(run_succeeded=False)
