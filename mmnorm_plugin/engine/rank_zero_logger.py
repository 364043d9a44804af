"""A ``LoggerHook`` whose test-metrics file is written by one process only.

mmengine 0.10.7's ``LoggerHook.after_test_epoch`` writes the test metrics to
``<work_dir>/<timestamp>/<timestamp>.json`` on *every* rank (the validation and training
records go through the visualizer, which only the main process writes). All ranks share the
timestamp, so under ``tools/dist_test.sh`` they open the same file for writing at the same time:
when one rank truncates it after another has started writing, the file keeps the shorter record
followed by the tail of the longer one (``{...}}``), which no JSON reader accepts. The ranks'
records differ only in their timing fields, so the main process's record is the run's record.

:class:`RankZeroLoggerHook` is ``LoggerHook`` with that one write made by the main process; every
rank still builds and logs the test summary as before (non-main ranks' loggers drop it, as
mmengine sets them up). Our tools turn a distributed run's ``LoggerHook`` into it
(:func:`use_rank_zero_logger`); a config opts in with
``default_hooks = dict(logger=dict(type='RankZeroLoggerHook', ...))``.
"""
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import LoggerHook
from mmengine.registry import HOOKS

__all__ = ['RankZeroLoggerHook', 'use_rank_zero_logger']


@HOOKS.register_module()
class RankZeroLoggerHook(LoggerHook):
    """``LoggerHook`` whose ``after_test_epoch`` writes the metrics file on the main process
    only (same arguments as ``LoggerHook``)."""

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
        runner.logger.info(log_str)
        if is_main_process():
            dump(self._process_tags(tag), osp.join(runner.log_dir, self.json_log_path))


def use_rank_zero_logger(cfg) -> None:
    """Turn ``cfg``'s ``LoggerHook`` into :class:`RankZeroLoggerHook` (same arguments).

    Other logger hooks (subclasses, ``None``) are left alone: they may write their own way.
    """
    hook = (cfg.get('default_hooks') or {}).get('logger')
    if hook is not None and hook.get('type') in ('LoggerHook', LoggerHook):
        hook['type'] = 'RankZeroLoggerHook'
