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

On CUDA machines nothing here is used: mmengine's own path (nccl) runs unchanged.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

__all__ = ['AnyDeviceDDP', 'init_cpu_process_group', 'needs_cpu_dist', 'use_cpu_ddp']


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

    The timeout comes from ``cfg.env_cfg.dist_cfg.timeout`` (seconds) as in mmengine; the
    backend in ``dist_cfg`` (usually 'nccl') is ignored: gloo is the CPU backend.
    """
    if torch_dist.is_initialized():
        return
    missing = [v for v in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if v not in os.environ]
    if missing:
        raise RuntimeError(f"--launcher pytorch without CUDA needs torchrun's environment "
                           f"({', '.join(missing)} unset): start it with tools/dist_train.sh "
                           "or torchrun.")
    dist_cfg = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend='gloo', **kwargs)


def use_cpu_ddp(cfg) -> None:
    """Make the Runner wrap the model in :class:`AnyDeviceDDP` (unless a custom wrapper is set)."""
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(type='AnyDeviceDDP')
    elif wrapper.get('type', 'MMDistributedDataParallel') in ('MMDistributedDataParallel',
                                                              MMDistributedDataParallel):
        wrapper['type'] = 'AnyDeviceDDP'
