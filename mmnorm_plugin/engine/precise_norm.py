"""Recompute running statistics at the end of training (detectron2's PreciseBN, as an mmengine hook).

A BN-like layer evaluates with running statistics: an EMA of the per-batch statistics it saw
while the weights were still moving. detectron2's ``PreciseBN`` replaces them after training by
the exact average over many batches of the final model, in training mode. At 1-2 images per
batch this matters twice: the EMA weights the last few (single-image) batches heavily, and the
average should be taken at the *training* batch size, because that is the normalization the
weights were trained with.

:func:`recalibrate_norms` does it for torch's BN and for every plugin norm whose running
statistics follow torch's ``momentum`` convention (``BGN``, ``BKN`` and their synced variants;
``momentum=None`` gives the cumulative average): the running buffers are reset, ``num_batches``
training batches go through the model in ``loss`` mode (the training forward, sampled RoIs
included; autograd on as in training, no backward), and every other buffer (counters, windows, priors) is restored
bit-identically, so the only change is the running statistics (CBN, whose windows live outside
registered buffers, is never touched). Layers in eval mode during
training (a frozen backbone's BN under ``norm_eval=True``) are left alone. ``CBN`` and ``MABN``
are skipped by default: CBN is never touched (above), and MABN evaluates with the same moving
averages it trains with.

:class:`PreciseNormHook` calls it once after the last training epoch (or iteration), before the
final checkpoint is written, and logs its cost.

What it measured on the project's CPU proxies (paired seeds, against the same norm without
it): no effect on BGN or BKN, at a cost of a few percent of a training run; the tables are in
``docs/study_defaults.md`` (records ``docs/norm_sweep_defaults_*``). It does **not** close BGN's
or BKN's gap to BN at 1 image per batch, and that is expected: at 1 image per batch both
normalize each training image with that image's own statistics (BGN's groups of one image; BKN's
batch statistics fused with its prior), while any running average, an EMA or the exact one, is a
population statistic. The mismatch lies between per-image and population statistics, not in how
the average is taken, so it ships as an option, not a default.
"""
import time
from typing import Callable, Iterable, List, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['PreciseNormHook', 'recalibrate_norms', 'recalibrated_layers']

_RUNNING = ('running_mean', 'running_var')
# state outside registered buffers (CBN's windows) could not be restored: never recalibrated
_NEVER = ('CBN', 'SyncCBN')


def recalibrated_layers(model: torch.nn.Module,
                        skip_types: Sequence[str] = ('CBN', 'SyncCBN', 'MABN')) -> List:
    """The layers :func:`recalibrate_norms` changes, with ``model`` in training mode."""
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
            and m.running_mean is not None and type(m).__name__ not in skip_types
            and not hasattr(m, 'hist_mean') and type(m).__name__ not in _NEVER]


def recalibrate_norms(model: torch.nn.Module, batches: Iterable, forward: Callable,
                      num_batches: int,
                      skip_types: Sequence[str] = ('CBN', 'SyncCBN', 'MABN')) -> int:
    """Set every recalibrated layer's running statistics to the exact average over
    ``num_batches`` batches of ``batches`` (``forward(batch)`` runs the model's training
    forward); return the number of batches used. The model's mode is restored."""
    if num_batches < 1:
        raise ValueError(f'num_batches must be >= 1, got {num_batches}')
    was_training = model.training
    model.train()
    layers = recalibrated_layers(model, skip_types)
    saved = [({k: v.clone() for k, v in m.named_buffers(recurse=False) if k not in _RUNNING},
              m.momentum) for m in layers]
    with torch.no_grad():
        for m in layers:
            m.momentum = None  # cumulative average over the batches below
            m.num_batches_tracked.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1)
    used = 0
    try:
        for batch in batches:
            if used == num_batches:
                break
            # with autograd on, as in training: BKN finds its layer chain through the graph
            # (without it, it runs as plain BN); nothing calls backward, so no weight changes
            forward(batch)
            used += 1
    finally:
        with torch.no_grad():
            for m, (state, momentum) in zip(layers, saved):
                m.momentum = momentum
                for key, value in state.items():
                    m.get_buffer(key).copy_(value)
        model.train(was_training)
    if used == 0:
        raise ValueError('recalibrate_norms got no batch')
    return used


@HOOKS.register_module()
class PreciseNormHook(Hook):
    """Recompute running statistics over ``num_batches`` training batches after training.

    Args:
        num_batches (int): training batches averaged (detectron2's default is 200).
        skip_types (sequence of str): norm classes left alone (see the module docstring).
    """
    # before CheckpointHook (VERY_LOW) saves the last checkpoint in the same hook call
    priority = 'ABOVE_NORMAL'

    def __init__(self, num_batches: int = 200,
                 skip_types: Sequence[str] = ('CBN', 'SyncCBN', 'MABN')) -> None:
        if num_batches < 1:
            raise ValueError(f'PreciseNormHook num_batches must be >= 1, got {num_batches}')
        self.num_batches = num_batches
        self.skip_types = tuple(skip_types)

    def after_train_epoch(self, runner) -> None:
        if runner.train_loop.__class__.__name__ == 'EpochBasedTrainLoop' and \
                runner.epoch + 1 >= runner.max_epochs:
            self._recalibrate(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.train_loop.__class__.__name__ != 'EpochBasedTrainLoop' and \
                runner.iter + 1 >= runner.max_iters:
            self._recalibrate(runner)

    def _recalibrate(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model

        def batches():
            while True:  # cycle: a small set may have fewer batches than asked for
                yield from runner.train_dataloader

        def forward(data):
            data = model.data_preprocessor(data, True)
            model(**data, mode='loss')

        start = time.time()
        layers = len(recalibrated_layers(model.train(), self.skip_types))
        used = recalibrate_norms(model, batches(), forward, self.num_batches, self.skip_types)
        runner.logger.info(f'PreciseNormHook: running statistics of {layers} layers recomputed '
                           f'over {used} training batches in {time.time() - start:.1f} s')
