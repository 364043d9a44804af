"""The one place our tools hook into mmengine's checkpoint loading: the ``mmnorm-guarded://``
scheme and the hook that routes a Runner's loads through it.

mmengine's Runner loads checkpoints itself (``load_from``, ``--resume``, auto-resume, every
``init_cfg=dict(type='Pretrained', ...)``) with ``torch.load`` and no check; ``Runner.resume``
then runs ``Config.fromstring(meta['config'])``, executing text from the file. Rather than
patching mmengine, this module adds two things and changes nothing of mmengine's for anyone else:

* a new :class:`~mmengine.runner.CheckpointLoader` scheme, ``mmnorm-guarded://<path or URL>``
  (:data:`GUARDED_PREFIX`, :func:`guarded`), whose loader :func:`load_from_guarded` reads the
  file's bytes once, checks its zip CRCs, loads them weights-only (one load at a time, the
  validating stand-ins for old-format objects; ``weights_only=False`` only for a file the user
  named with ``--unsafe-load PATH``), verifies its checksum on the object it loaded, removes
  the ``meta`` entries mmengine would execute, and logs one line saying what it verified.
  ``http(s)://``, ``torchvision://`` and ``open-mmlab://`` names are downloaded to torch's hub
  cache as mmengine does (mmengine itself would unpickle them with ``weights_only=False``),
  then loaded the same way;
* :class:`GuardedCheckpointLoadHook` (``before_run``, after every other hook chose the file):
  points ``runner._load_from`` (the resume/``load_from`` file; for an auto-resume without
  :class:`~mmnorm_plugin.engine.SafeCheckpointHook`, mmengine's own latest checkpoint) and the
  ``checkpoint`` of every ``Pretrained`` ``init_cfg`` of the built model at that scheme, in
  memory only (the config, its dump and the saved ``meta['cfg']`` keep the plain paths).

Our ``tools/train.py``/``tools/test.py`` add the hook to every config; ``tools/deploy`` and the
model converters load through :func:`guarded`. Paths of other schemes (``s3://``, ``pavi://``)
are left to mmengine (torch's weights-only default: no code, no checksum).
"""
import copy
import os
import os.path as osp
from typing import Any, List
from urllib.parse import urlparse

from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import CheckpointLoader

from ..checkpoint.loading import drop_executable_meta, is_trusted
from ..checkpoint.safety import STATUS_TEXT, load_verified_checkpoint

__all__ = ['GUARDED_PREFIX', 'guarded', 'unguarded', 'load_from_guarded', 'guard_init_cfgs',
           'GuardedCheckpointLoadHook']

GUARDED_PREFIX = 'mmnorm-guarded://'
_URL_SCHEMES = ('http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
                'openmmlab://')


def guarded(path: str) -> str:
    """``path`` (a local file or an http(s)/torchvision/open-mmlab name) as a guarded name;
    other schemes and already guarded names are returned unchanged."""
    path = str(path)
    if path.startswith(GUARDED_PREFIX) or ('://' in path and not path.startswith(_URL_SCHEMES)):
        return path
    return GUARDED_PREFIX + path


def unguarded(name: str) -> str:
    """The path or URL a guarded name stands for."""
    name = str(name)
    return name[len(GUARDED_PREFIX):] if name.startswith(GUARDED_PREFIX) else name


def _download(url: str) -> str:
    """Where mmengine's ``load_url`` caches ``url`` (torch's hub dir), downloaded if absent;
    rank 0 first in a distributed run, as mmengine does."""
    import torch
    from torch.hub import download_url_to_file, get_dir
    cached = osp.join(get_dir(), 'checkpoints', osp.basename(urlparse(url).path))

    def fetch():
        if not osp.isfile(cached):
            os.makedirs(osp.dirname(cached), exist_ok=True)
            print_log(f'downloading {url} to {cached}', logger='current')
            download_url_to_file(url, cached, progress=False)

    rank, world_size = get_dist_info()
    if rank == 0:
        fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:  # a node of its own: its own cache
            fetch()
    return cached


def _local_file(name: str) -> str:
    """The local file a guarded name is loaded from (URLs resolved as mmengine resolves them)."""
    from mmengine.runner.checkpoint import (_get_mmengine_home, get_deprecated_model_names,
                                            get_external_models, get_torchvision_models)
    if name.startswith(('torchvision://', 'modelzoo://')):
        return _download(get_torchvision_models()[name.split('://', 1)[1]])
    if name.startswith(('open-mmlab://', 'openmmlab://')):
        model = name.split('://', 1)[1]
        model = get_deprecated_model_names().get(model, model)
        url = get_external_models()[model]
        return _download(url) if url.startswith(('http://', 'https://')) else osp.join(
            _get_mmengine_home(), url)
    if name.startswith(('http://', 'https://')):
        return _download(name)
    return osp.expanduser(name)


@CheckpointLoader.register_scheme(prefixes=GUARDED_PREFIX)
def load_from_guarded(filename: str, map_location=None):
    """mmengine loader of ``mmnorm-guarded://`` names (see the module docstring).

    Raises :class:`~mmnorm_plugin.checkpoint.safety.DamagedCheckpoint` or
    :class:`~mmnorm_plugin.checkpoint.loading.RefusedCheckpoint`, one line each.
    """
    name = unguarded(filename)
    path = _local_file(name)
    # --unsafe-load may name the downloaded file or the URL it came from
    checkpoint, status = load_verified_checkpoint(
        path, map_location=map_location, return_status=True,
        trusted=is_trusted(path) or is_trusted(name))
    print_log(f'checkpoint {path}: {STATUS_TEXT[status]}', logger='current')
    for line in drop_executable_meta(checkpoint, path):
        print_log(line, logger='current')
    return checkpoint


def _guard_init_cfg(cfg: Any) -> Any:
    """A copy of ``init_cfg`` whose ``Pretrained`` entries (``override`` included) load
    through the guarded scheme; the original is not modified."""
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_guard_init_cfg(c) for c in cfg)
    if not isinstance(cfg, dict):
        return cfg
    out = copy.copy(cfg)
    for key, value in cfg.items():
        out[key] = _guard_init_cfg(value)
    kind = out.get('type')
    if (kind == 'Pretrained' or getattr(kind, '__name__', None) == 'PretrainedInit') \
            and isinstance(out.get('checkpoint'), str):
        out['checkpoint'] = guarded(out['checkpoint'])
    return out


def guard_init_cfgs(model) -> List[str]:
    """Point the ``checkpoint`` of every ``Pretrained`` ``init_cfg`` of ``model``'s modules at
    the guarded scheme (in memory), so that ``model.init_weights()`` loads through
    :func:`load_from_guarded`; returns the changed ``init_cfg`` entries as text."""
    changed = []
    for module in model.modules():
        init_cfg = getattr(module, 'init_cfg', None)
        if init_cfg:
            new = _guard_init_cfg(init_cfg)
            if new != init_cfg:
                module.init_cfg = new
                changed.append(str(new))
    return changed


@HOOKS.register_module()
class GuardedCheckpointLoadHook(Hook):
    """Route every checkpoint load of the Runner through :func:`load_from_guarded`.

    ``before_run`` at the ``LOWEST`` priority, after the hooks that choose the file
    (``SafeCheckpointHook``'s resume walk-back), before ``Runner.train``/``test`` initialize
    the weights and call ``load_or_resume``.
    """
    priority = 'LOWEST'

    def before_run(self, runner) -> None:
        guarded_files: List[str] = []
        if not getattr(runner, '_has_loaded', False):
            load_from, resume = runner._load_from, runner._resume
            if resume and load_from is None:  # auto-resume: mmengine's own choice of file
                from mmengine.runner.checkpoint import find_latest_checkpoint
                load_from = find_latest_checkpoint(runner.work_dir)
            if load_from is not None:
                runner._load_from = guarded(load_from)
                guarded_files.append(runner._load_from)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        guarded_files += guard_init_cfgs(model)
        if guarded_files:
            runner.logger.debug(f'GuardedCheckpointLoadHook: guarded {guarded_files}')
