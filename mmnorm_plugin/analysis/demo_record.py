"""What ``make demo`` prints, recorded: the demo's expected result and a cheap check that it holds.

``make demo`` trains one config with a fixed seed on CPU, so with unchanged code it prints the
same COCO metrics every time. :func:`record_demo` runs it the way ``tools/run_demo.sh`` does
(``tools/train.py`` then ``tools/test.py``, one thread) and writes
``docs/evidence/demo.json``:
the config, the metrics, the provenance of the code at the start, and a *fingerprint* —
the per-iteration losses of a short run of the same config (:func:`fingerprint`: the first
:data:`FINGERPRINT_IMAGES` training images, one epoch, a loss logged every iteration).

The test suite reruns only the fingerprint (seconds, not the demo's minutes) and compares it
with the record: code that changes what the demo config computes (a norm's behaviour, its
defaults, the data) changes the losses from the first iterations on, and the check fails
until the demo is recorded again (``make demo-record``). Floating-point noise (another CPU,
another BLAS path) stays far below the tolerance over so few iterations; see
``docs/cbn_trajectory.md`` for how a rounding-sized difference grows in this training.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

from .provenance import ROOT, provenance

__all__ = ['DEMO_CONFIG', 'FINGERPRINT_IMAGES', 'fingerprint', 'record_demo', 'compare_losses',
           'summary']

#: the config ``make demo`` trains (tools/run_demo.sh's default)
DEMO_CONFIG = 'configs/small_batch/faster-rcnn_r18-w16_fpn_cbn_1xb1_tiny-coco-hard.py'
#: images (= iterations at 1 image per batch) of the fingerprint run
FINGERPRINT_IMAGES = 12
_FINGERPRINT_OPTIONS = [f'train_dataloader.dataset.indices={FINGERPRINT_IMAGES}',
                        'train_cfg.max_epochs=1', 'train_cfg.val_interval=100',
                        'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=100']


#: torch threads of the demo (tools/run_demo.sh's default): a float sum split over another
#: number of threads rounds differently, and this training amplifies rounding; one thread also
#: keeps a busy machine from oversubscribing its cores
THREADS = 1


def _python_env() -> Dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
                PYTHONUNBUFFERED='1')


def _run(args: List[str], log: str) -> None:
    with open(log, 'a') as f:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=_python_env(), stdout=f,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f'{args[0]} failed (exit {done.returncode}); see {log}')


def _scalars(train_dir: str) -> List[Dict]:
    lines = []
    for path in sorted(glob.glob(osp.join(train_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            lines += [json.loads(line) for line in f]
    return lines


def _ensure_data(config: str) -> None:
    """Generate the demo's set if it is missing (its data_root is relative to the checkout)."""
    from mmengine.config import Config

    from .norm_sweep import ensure_dataset
    here = os.getcwd()
    try:
        os.chdir(ROOT)
        ensure_dataset(Config.fromfile(config))
    finally:
        os.chdir(here)


def fingerprint(work_dir: str, config: str = DEMO_CONFIG) -> List[float]:
    """The total loss of each iteration of a short run of ``config`` (its first
    :data:`FINGERPRINT_IMAGES` training images, one epoch, same seed)."""
    _ensure_data(config)
    os.makedirs(work_dir, exist_ok=True)
    train_dir = osp.join(work_dir, 'fingerprint')
    _run([osp.join('tools', 'train.py'), config, '--work-dir', train_dir, '--cfg-options',
          *_FINGERPRINT_OPTIONS], osp.join(work_dir, 'fingerprint.log'))
    losses = [entry['loss'] for entry in _scalars(train_dir) if 'loss' in entry]
    if len(losses) != FINGERPRINT_IMAGES:
        raise RuntimeError(f'the fingerprint run logged {len(losses)} losses, expected '
                           f'{FINGERPRINT_IMAGES}; see {work_dir}/fingerprint.log')
    return losses


def compare_losses(recorded: List[float], now: List[float], rtol: float = 1e-4) -> Optional[str]:
    """None if ``now`` matches ``recorded`` within ``rtol`` at every iteration, else the first
    iteration that does not, in one line."""
    if len(recorded) != len(now):
        return f'{len(now)} losses, the record has {len(recorded)}'
    for i, (a, b) in enumerate(zip(recorded, now), 1):
        if abs(a - b) > rtol * max(abs(a), abs(b)):
            return f'iteration {i}: loss {b:.6g}, recorded {a:.6g}'
    return None


def record_demo(work_dir: str, out: str, config: str = DEMO_CONFIG) -> Dict:
    """Train and test ``config`` as ``make demo`` does, take its fingerprint, write the record
    to ``out`` and return it."""
    started = provenance(with_diff=True)
    os.makedirs(work_dir, exist_ok=True)
    _ensure_data(config)
    log = osp.join(work_dir, 'demo.log')
    start = time.time()
    train_dir, test_dir = osp.join(work_dir, 'train'), osp.join(work_dir, 'test')
    _run([osp.join('tools', 'train.py'), config, '--work-dir', train_dir], log)
    with open(osp.join(train_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    _run([osp.join('tools', 'test.py'), config, checkpoint, '--work-dir', test_dir], log)
    seconds = time.time() - start
    [result] = sorted(glob.glob(osp.join(test_dir, '*', '*.json')))[-1:]
    with open(result) as f:
        metrics = {k: v for k, v in json.loads(f.read().splitlines()[-1]).items()
                   if k.startswith('coco/')}
    record = dict(config=config, seed=0, threads=THREADS, metrics=metrics,
                  seconds=round(seconds, 1),
                  fingerprint=dict(images=FINGERPRINT_IMAGES, options=_FINGERPRINT_OPTIONS,
                                   losses=fingerprint(work_dir, config)),
                  command='make demo-record', **started)
    with open(out + '.tmp', 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(out + '.tmp', out)
    return record


def summary(record: Dict) -> str:
    """The sentence the docs quote (a generated block): what ``make demo`` prints."""
    m = record['metrics']
    return (f"`make demo` prints bbox mAP {m['coco/bbox_mAP']:.3f} (AP50 "
            f"{m['coco/bbox_mAP_50']:.3f}) for `{osp.basename(record['config'])}`: seed "
            f"{record['seed']}, {record['threads']} CPU thread"
            f"{'s' if record['threads'] > 1 else ''}, recorded at commit "
            f"{record['commit'][:7]} "
            f"(`{record['command']}`; the test suite checks that the code still computes the "
            f"same first {record['fingerprint']['images']} iterations).")
