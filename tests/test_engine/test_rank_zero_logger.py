"""RankZeroLoggerHook: one process writes the test-metrics file of a distributed run."""
import json
from types import SimpleNamespace
from unittest import mock

import pytest
from mmengine.config import Config
from mmengine.hooks import LoggerHook

import mmnorm_plugin.engine.rank_zero_logger as rank_zero_logger
from mmnorm_plugin.engine import RankZeroLoggerHook, use_rank_zero_logger

TAG = {'coco/bbox_mAP': 0.25, 'time': 0.0625}


def _runner(log_dir):
    processor = mock.Mock()
    processor.get_log_after_epoch.return_value = (dict(TAG), 'test summary')
    return SimpleNamespace(log_processor=processor, test_dataloader=[0, 1, 2], log_dir=str(log_dir),
                           logger=mock.Mock())


def _test_epoch(hook, log_dir, main):
    runner = _runner(log_dir)
    hook.json_log_path = 'run.json'
    # mmengine's hook asks no rank question; ours asks mmengine.dist
    with mock.patch.object(rank_zero_logger, 'is_main_process', return_value=main):
        hook.after_test_epoch(runner)
    return runner


def test_mmengines_hook_writes_the_metrics_file_on_every_rank(tmp_path):
    # why the subclass exists: were this to fail, mmengine writes it once and ours is moot
    _test_epoch(LoggerHook(), tmp_path, main=False)
    assert (tmp_path / 'run.json').exists()


@pytest.mark.parametrize('main', [True, False])
def test_only_the_main_process_writes_it_and_every_rank_logs_the_summary(tmp_path, main):
    runner = _test_epoch(RankZeroLoggerHook(), tmp_path, main)
    runner.logger.info.assert_called_once_with('test summary')
    runner.log_processor.get_log_after_epoch.assert_called_once_with(
        runner, 3, 'test', with_non_scalar=True)
    path = tmp_path / 'run.json'
    if main:  # the record mmengine's hook writes, unchanged
        expected = tmp_path / 'expected'
        expected.mkdir()
        _test_epoch(LoggerHook(), expected, main=True)
        assert json.loads(path.read_text()) == json.loads((expected / 'run.json').read_text())
        assert json.loads(path.read_text()) == TAG
    else:
        assert not path.exists()


def test_only_mmengines_logger_hook_is_replaced_with_its_arguments_kept():
    cfg = Config(dict(default_hooks=dict(logger=dict(type='LoggerHook', interval=7))))
    use_rank_zero_logger(cfg)
    assert cfg.default_hooks.logger == dict(type='RankZeroLoggerHook', interval=7)
    by_class = dict(default_hooks=dict(logger=dict(type=LoggerHook)))
    use_rank_zero_logger(by_class)
    assert by_class['default_hooks']['logger']['type'] == 'RankZeroLoggerHook'
    custom = dict(default_hooks=dict(logger=dict(type='MyLoggerHook')))
    use_rank_zero_logger(custom)
    assert custom['default_hooks']['logger']['type'] == 'MyLoggerHook'
    use_rank_zero_logger(dict(default_hooks=dict(logger=None)))  # no hook: nothing to do
    use_rank_zero_logger(dict())


def test_a_config_builds_it_from_mmengines_registry():
    from mmengine.registry import HOOKS
    hook = HOOKS.build(dict(type='RankZeroLoggerHook', interval=3))
    assert isinstance(hook, RankZeroLoggerHook) and hook.interval == 3
