"""Express CBN's burn-in in epochs, the unit the CBN authors reasoned in."""
import logging
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..norms.cbn import CBN

__all__ = ['CBNBurnInHook']


@HOOKS.register_module()
class CBNBurnInHook(Hook):
    """Set ``burnin_iters`` of every :class:`~mmnorm_plugin.norms.cbn.CBN` from epochs.

    A layer cannot know how many iterations an epoch has: that depends on the dataset
    length, the images per GPU and the number of GPUs. The official CBN ``tools/train.py``
    converted ``burnin`` epochs to iterations as ``epochs × len(dataset) / imgs_per_gpu /
    world_size``; this hook does the same with ``len(runner.train_dataloader)`` (iterations
    per epoch on this rank, hence world-size aware) before training starts, on a fresh run
    and on resume alike (the layers' iteration counters are checkpointed buffers).

    Args:
        burnin_epochs (float): epochs of plain BN before the cross-iteration window is used.
            The released configs meant 8 of the 12 epochs of a 1x schedule (CBN switched on
            near the first LR drop); see ``configs/cbn/README.md``.
        iters_per_epoch (int, optional): override the dataloader length (iteration-based
            loops over an infinite sampler, or tests).
    """
    priority = 'NORMAL'

    def __init__(self, burnin_epochs: float, iters_per_epoch: Optional[int] = None) -> None:
        if burnin_epochs < 0:
            raise ValueError(f'burnin_epochs must be >= 0, got {burnin_epochs}')
        self.burnin_epochs = burnin_epochs
        self.iters_per_epoch = iters_per_epoch

    def before_train(self, runner) -> None:
        per_epoch = self.iters_per_epoch
        if per_epoch is None:
            per_epoch = len(runner.train_dataloader)
        burnin_iters = int(round(self.burnin_epochs * per_epoch))
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        layers = [m for m in model.modules() if isinstance(m, CBN)]
        for layer in layers:
            layer.burnin_iters = burnin_iters
        level = logging.INFO if layers else logging.WARNING
        print_log(f'CBNBurnInHook: {len(layers)} CBN layers use plain BN for the first '
                  f'{burnin_iters} iterations ({self.burnin_epochs} epochs x {per_epoch} '
                  'iterations per epoch).', logger='current', level=level)
