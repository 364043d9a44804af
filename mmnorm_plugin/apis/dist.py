"""Distributed training and testing on machines without CUDA (gloo), without editing mmengine.

mmengine 0.10.7 cannot run ``--launcher pytorch`` on a CPU-only machine, for two reasons:

1. ``init_dist`` -> ``_init_dist_pytorch`` calls ``torch.cuda.set_device(LOCAL_RANK)`` before
   ``init_process_group`` and fails without CUDA. But ``Runner.setup_env`` calls ``init_dist``
   only ``if self.distributed and not is_distributed()``: a process group that already exists
   is used as is. :func:`init_cpu_process_group` creates it (gloo, ``env://`` from the
   variables torchrun sets) before mmdet's ``main`` builds the Runner.
2. ``Runner.wrap_model`` builds ``MMDistributedDataParallel(module, device_ids=[LOCAL_RANK])``,
   which torch refuses for a CPU module (``device_ids`` is for GPU modules only). The model
   wrapper type comes from ``cfg.model_wrapper_cfg``: :class:`AnyDeviceDDP` is
   ``MMDistributedDataParallel`` that drops ``device_ids`` when the module's parameters live
   on the CPU, and :func:`use_cpu_ddp` puts it into the config.

At the end of a run, :func:`close_cpu_process_group` tears that group down while Python still
runs (why: its docstring).

On CUDA machines nothing of the above is used: mmengine's own path (nccl) runs unchanged.

For every distributed launch of our tools: collectives wait at most ``env_cfg.dist_cfg.timeout``
seconds (:data:`DEFAULT_TIMEOUT_S` when unset, :func:`set_default_dist_timeout`) for the other
ranks, and a rank that then finds another one dead or silent stops with one line
(:func:`lost_peer_message`) instead of a traceback.
"""
import gc
import os
import re
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

__all__ = ['AnyDeviceDDP', 'init_cpu_process_group', 'close_cpu_process_group',
           'needs_cpu_dist', 'use_cpu_ddp',
           'DEFAULT_TIMEOUT_S', 'dist_timeout_s', 'set_default_dist_timeout',
           'lost_peer_message']

# torch's own default for gloo (its NCCL default is 10 min): long enough for rank 0 to compute
# COCO metrics while the other ranks wait in the broadcast of the results
DEFAULT_TIMEOUT_S = 1800


@MODEL_WRAPPERS.register_module()
class AnyDeviceDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also wraps CPU modules (gloo).

    torch's DDP accepts ``device_ids`` only for single-device GPU modules; mmengine's Runner
    always passes ``[LOCAL_RANK]``. For a module whose parameters are all on the CPU the
    argument is dropped; on GPU this class is ``MMDistributedDataParallel``.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        if all(p.device.type == 'cpu' for p in module.parameters()):
            device_ids = None
            kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def needs_cpu_dist(launcher: str) -> bool:
    """A torchrun launch (``--launcher pytorch``) on a machine without CUDA."""
    return launcher == 'pytorch' and not torch.cuda.is_available()


def init_cpu_process_group(cfg) -> None:
    """Create the default gloo process group from torchrun's environment (idempotent).

    The timeout is :func:`dist_timeout_s` (``cfg.env_cfg.dist_cfg.timeout`` as in mmengine);
    the backend in ``dist_cfg`` (usually 'nccl') is ignored: gloo is the CPU backend.
    """
    if torch_dist.is_initialized():
        return
    missing = [v for v in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if v not in os.environ]
    if missing:
        raise RuntimeError(f"--launcher pytorch without CUDA needs torchrun's environment "
                           f"({', '.join(missing)} unset): start it with tools/dist_train.sh "
                           "or torchrun.")
    torch_dist.init_process_group(backend='gloo', timeout=timedelta(seconds=dist_timeout_s(cfg)))


def close_cpu_process_group(run_succeeded: bool) -> None:
    """Tear down the gloo group of :func:`init_cpu_process_group` while Python still runs.

    Left to interpreter exit, the group outlives ``destroy_process_group`` (the Runner's DDP
    wrapper, in a reference cycle, still holds it) and its worker threads are stopped during
    finalization. A worker that was still releasing the tensors of the run's last collective
    (in a test run, mmengine's broadcast of the metrics, a millisecond before exit) then waits
    for the GIL of an interpreter that is shutting down, and the process aborts ('terminate
    called without an active exception') after a run that succeeded.

    So, after a successful run, the ranks first meet in a barrier (its wait releases the GIL,
    and the workers finish what they hold); then the group is destroyed and collected, which
    joins its threads. After a failed run there is no barrier: a dead peer would make it wait
    the whole timeout. The group is destroyed even when the barrier fails (its error is
    raised), and a second call does nothing.
    """
    if not torch_dist.is_initialized():
        return
    try:
        if run_succeeded:
            torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()
        gc.collect()  # the last references to the group sit in cycles (Runner -> DDP -> group)


def dist_timeout_s(cfg) -> float:
    """Seconds a collective waits for the other ranks: ``env_cfg.dist_cfg.timeout`` or ours."""
    timeout = ((cfg.get('env_cfg') or {}).get('dist_cfg') or {}).get('timeout')
    return DEFAULT_TIMEOUT_S if timeout is None else timeout


def set_default_dist_timeout(cfg) -> None:
    """Write :data:`DEFAULT_TIMEOUT_S` into ``cfg.env_cfg.dist_cfg`` unless it sets a timeout.

    mmengine's ``init_dist`` (nccl) reads it from there; with it in the config, the dumped
    config states the timeout a run used.
    """
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('timeout') is None:
        dist_cfg['timeout'] = DEFAULT_TIMEOUT_S


# errors of the collective stack (torch's own DistError subclasses say so by type) ...
_DIST_SOURCES = ('gloo', 'NCCL', 'c10d', 'ProcessGroup')
# ... that mean a peer died (its sockets closed) or stopped answering (the timeout ran out)
_PEER_LOST = ('closed by peer', 'reset by peer', 'Broken pipe', 'Timed out', 'timed out',
              'timing out', 'communicator was aborted')
# gloo's words for a pair it closed after an earlier timeout; they name no source
_GLOO_PEER_LOST = ('timeout caused pair closure',)


def lost_peer_message(err: BaseException, timeout_s: float) -> Optional[str]:
    """One actionable line for an error that means another rank is gone, else ``None``."""
    text = str(err)
    from_dist = (isinstance(err, getattr(torch_dist, 'DistError', ()))
                 or any(source in text for source in _DIST_SOURCES))
    if not ((from_dist and any(marker in text for marker in _PEER_LOST))
            or any(marker in text for marker in _GLOO_PEER_LOST)):
        return None
    # gloo prefixes its source position: "[.../gloo/transport/tcp/pair.cc:553] Connection ..."
    detail = re.sub(r'^\[[^\]]*\]\s*', '', text.strip().splitlines()[0] if text.strip() else '')
    detail = detail.split('. ')[0].rstrip('.') or type(err).__name__
    rank = (f'rank {torch_dist.get_rank()} of {torch_dist.get_world_size()}'
            if torch_dist.is_initialized() else 'this rank')
    return (f'{rank}: lost contact with another rank ({detail}): a rank died or stopped '
            f'responding (collectives wait at most env_cfg.dist_cfg.timeout = {timeout_s} s). '
            'Restart all ranks with --resume to continue from the last checkpoint.')


def use_cpu_ddp(cfg) -> None:
    """Make the Runner wrap the model in :class:`AnyDeviceDDP` (unless a custom wrapper is set)."""
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(type='AnyDeviceDDP')
    elif wrapper.get('type', 'MMDistributedDataParallel') in ('MMDistributedDataParallel',
                                                              MMDistributedDataParallel):
        wrapper['type'] = 'AnyDeviceDDP'
