"""Running a sweep: each arm-seed is ``tools/train.py`` then ``tools/test.py`` in its own
processes, resumable, with the provenance of the code it started with and, on request, its
learning curve; one JSON record per finished arm-seed (:mod:`.records`)."""
import concurrent.futures
import datetime
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..provenance import ROOT, provenance
from .arms import PARTS, Arm, arm_config
from .cost import run_cost
from .records import _read_json, check_record, load_records, record_path

__all__ = ['ensure_dataset', 'run_arm', 'run_sweep']

def ensure_dataset(cfg) -> Optional[str]:
    """Generate the project's own sets (tiny_coco, tiny_coco_hard, photo_digits) when a config
    reads one that is not there yet; return the data root (None when it is not ours)."""
    try:
        root = cfg.train_dataloader.dataset.data_root.rstrip('/')
    except AttributeError:
        return None
    if osp.isfile(osp.join(root, 'annotations', 'instances_val.json')):
        return root
    name = osp.basename(root)
    if name == 'photo_digits':
        from ...datasets import make_photo_digits
        make_photo_digits(root)
    elif name in ('tiny_coco', 'tiny_coco_hard'):
        from ...datasets.tiny_coco import make_tiny_coco
        make_tiny_coco(root, variant='hard' if name.endswith('_hard') else 'default')
    else:
        return None
    return root


def _run(cmd: List[str], log_path: str, env: Dict, nice: int) -> Tuple[int, float, float]:
    """Run ``cmd`` with output to ``log_path``; return (exit code, seconds, peak RSS in MiB)."""
    start = time.time()
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd(),
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.time() - start, usage.ru_maxrss / 1024


def _last_checkpoint(work_dir: str) -> Optional[str]:
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        path = open(marker).read().strip()
        return path if osp.isfile(path) else None
    return None


def _test_metrics(test_dir: str) -> Dict:
    import glob
    files = sorted(glob.glob(osp.join(test_dir, '*', '*.json')))
    if not files:
        raise RuntimeError(f'tools/test.py wrote no metrics under {test_dir}')
    with open(files[-1]) as f:
        return json.loads(f.read().splitlines()[-1])


_EMPTY_RESULTS = 'The testing results of the whole dataset is empty.'  # mmdet's CocoMetric


def _zero_metrics(cfg) -> Dict:
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else \
        [cfg.test_evaluator]
    metrics = {}
    for evaluator in evaluators:
        kinds = evaluator.get('metric', 'bbox')
        for kind in [kinds] if isinstance(kinds, str) else kinds:
            for suffix in ('', '_50', '_75', '_s', '_m', '_l'):
                metrics[f'coco/{kind}_mAP{suffix}'] = 0.0
    return metrics
_CONFIG_LOCK = threading.Lock()


def run_arm(config: str, arm: Arm, seed: int, out_dir: str, parts: Sequence[str] = PARTS,
            cfg_options: Optional[Dict] = None, threads: int = 1, nice: int = 0,
            keep_checkpoints: bool = False, python: str = sys.executable,
            val_interval: Optional[int] = None) -> Dict:
    """Train and evaluate one arm-seed (resuming its own checkpoint); write and return its
    record.

    The provenance (commit, dirty flag, hash and text of the diff) is taken when the arm-seed
    *starts* and kept in its run directory: a run resumed after the checkout moved to another
    commit, or changed its uncommitted diff, is refused instead of being labelled with the
    code it ended on. With ``val_interval`` the record also holds ``curve``: the metrics of
    every evaluation during training, in order (the learning curve)."""
    run_dir = osp.join(out_dir, 'runs', f'{arm.norm}@{arm.batch}_seed{seed}')
    arm_cfg = osp.join(run_dir, 'config.py')
    # mmengine's `mmdet::` config lookup (pkg_resources) is not thread-safe
    with _CONFIG_LOCK:
        cfg, options = arm_config(config, arm, seed, parts, cfg_options, val_interval)
        ensure_dataset(cfg)
        os.makedirs(run_dir, exist_ok=True)
        cfg.dump(arm_cfg)
    started = _start_provenance(run_dir, f'{arm.name} seed {seed}')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED='1')
    log = osp.join(run_dir, 'run.log')
    train_dir, test_dir = osp.join(run_dir, 'train'), osp.join(run_dir, 'test')
    rc, train_s, train_mem = _run([python, osp.join(ROOT, 'tools', 'train.py'), arm_cfg,
                                   '--work-dir', train_dir, '--resume'], log, env, nice)
    checkpoint = _last_checkpoint(train_dir)
    if rc != 0 or checkpoint is None:
        raise RuntimeError(f'{arm.name} seed {seed}: training failed (exit {rc}); see {log}')
    test_log_start = osp.getsize(log)
    rc, test_s, test_mem = _run([python, osp.join(ROOT, 'tools', 'test.py'), arm_cfg,
                                 checkpoint, '--work-dir', test_dir], log, env, nice)
    if rc != 0:
        raise RuntimeError(f'{arm.name} seed {seed}: evaluation failed (exit {rc}); see {log}')
    metrics = {k: v for k, v in _test_metrics(test_dir).items() if k.startswith('coco/')}
    extra = {}
    if val_interval:
        extra['curve'] = _val_curve(train_dir)
    cost = run_cost(train_dir)
    if cost is not None:  # every session's work: train_seconds times only the last process
        extra['cost'] = cost
    if not metrics:
        with open(log) as f:
            f.seek(test_log_start)
            empty = _EMPTY_RESULTS in f.read()
        if not empty:
            raise RuntimeError(f'{arm.name} seed {seed}: tools/test.py reported no COCO '
                               f'metrics; see {log}')
        # mmdet's CocoMetric returns nothing when the detector kept no box at all; COCO AP of
        # an empty detection set is 0, and dropping the arm-seed would break its pairs
        metrics = _zero_metrics(cfg)
        extra['no_detections'] = True
    record = dict(
        arm=arm.name, norm=arm.norm, spec=arm.spec, images_per_batch=arm.batch, seed=seed,
        config=_config_key(config),
        parts=list(arm.spec.get('parts', parts)), cfg_options=cfg_options or {},
        options=options, lr=options['optim_wrapper.optimizer.lr'], threads=threads,
        train_seconds=round(train_s, 1), test_seconds=round(test_s, 1),
        peak_memory_mib=round(max(train_mem, test_mem), 1), metrics=metrics,
        finished=datetime.datetime.now().isoformat(timespec='seconds'), **extra, **started)
    path = record_path(out_dir, arm.name, seed)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(path + '.tmp', path)  # a record exists whole or not at all
    if not keep_checkpoints:
        import glob
        for ckpt in glob.glob(osp.join(train_dir, '*.pth')):
            os.remove(ckpt)
    return record


def _start_provenance(run_dir: str, name: str) -> Dict:
    """The provenance of the code an arm-seed started with (written once, at its start, into
    ``run_dir/provenance.json``); raises RuntimeError when the code has changed since (another
    commit, or another uncommitted diff), so that no record mixes two versions of the code."""
    path = osp.join(run_dir, 'provenance.json')
    now = provenance(with_diff=True)
    now['started'] = datetime.datetime.now().isoformat(timespec='seconds')
    if not osp.isfile(path):
        with open(path + '.tmp', 'w') as f:
            json.dump(now, f, indent=1)
        os.replace(path + '.tmp', path)
        return now
    with open(path) as f:
        then = json.load(f)
    if (then.get('commit'), then.get('diff_sha256')) != (now['commit'], now['diff_sha256']):
        raise RuntimeError(
            f"{name}: started at commit {str(then.get('commit'))[:7]}"
            f"{' (dirty)' if then.get('dirty') else ''}, the checkout is now at "
            f"{str(now['commit'])[:7]}{' (dirty)' if now['dirty'] else ''}: resume it from "
            f'a checkout of the commit it started at, or delete {run_dir} to start it again')
    return then


def _val_curve(train_dir: str) -> List[Dict]:
    """Every evaluation logged during training (mmengine's ``vis_data/scalars.json`` of each
    run in ``train_dir``, a resumed run adding a directory), in step order, one per step:
    ``[{'step': epoch or iteration, 'metrics': {'coco/bbox_mAP': ...}}, ...]``."""
    import glob
    points: Dict[int, Dict] = {}
    for path in sorted(glob.glob(osp.join(train_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                metrics = {k: v for k, v in entry.items() if k.startswith('coco/')}
                if metrics:
                    points[int(entry['step'])] = metrics
    return [dict(step=step, metrics=points[step]) for step in sorted(points)]


def _config_key(config: str) -> str:
    """The config as records name it: relative to the checkout when inside it."""
    return osp.relpath(config, ROOT) if osp.abspath(config).startswith(ROOT) else config


def _check_recorded(config: str, arms: Sequence[Arm], seeds: Sequence[int], out_dir: str,
                    parts: Sequence[str], cfg_options: Optional[Dict]) -> None:
    """A record counts as done for an arm-seed only if it was made with the same config,
    spec, parts and options: resuming after a spec was edited under the same name would
    otherwise pair old results with the new arm. Raises ValueError listing every mismatch
    before anything runs."""
    rel = _config_key(config)
    wrong = []
    for arm in arms:
        want = dict(config=rel, spec=arm.spec, parts=list(arm.spec.get('parts', parts)),
                    cfg_options=cfg_options or {})
        for seed in seeds:
            path = record_path(out_dir, arm.name, seed)
            if not osp.isfile(path):
                continue
            have = check_record(_read_json(path), path)
            # JSON round trip: tuples in the requested arm read back as lists
            diff = [k for k, v in want.items() if json.loads(json.dumps(v)) != have.get(k)]
            if diff:
                wrong.append(f'{arm.name} seed {seed}: ' + ', '.join(
                    f'{k} {have.get(k)!r} recorded, {want[k]!r} asked' for k in diff))
    if wrong:
        raise ValueError('norm_sweep: records in ' + out_dir + ' were made with other settings '
                         'than asked (rename the arm, or move the records away):\n  '
                         + '\n  '.join(wrong[:10])
                         + (f'\n  ... and {len(wrong) - 10} more' if len(wrong) > 10 else ''))


def run_sweep(config: str, arms: Sequence[Arm], seeds: Sequence[int], out_dir: str,
              parts: Sequence[str] = PARTS, cfg_options: Optional[Dict] = None, jobs: int = 1,
              threads: Optional[int] = None, nice: int = 0, keep_checkpoints: bool = False,
              logger=None, val_interval: Optional[int] = None) -> List[Dict]:
    """Run every (arm, seed) without a record, ``jobs`` at a time, seed-major (all arms of a
    seed before the next seed, so that a stopped sweep leaves complete pairs); return the
    records of the grid (old and new)."""
    from mmengine.logging import print_log
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    _check_recorded(config, arms, seeds, out_dir, parts, cfg_options)
    todo = [(arm, s) for s in seeds for arm in arms
            if not osp.isfile(record_path(out_dir, arm.name, s))]
    total = len(arms) * len(seeds)
    print_log(f'norm_sweep: {total} arm-seeds, {total - len(todo)} already recorded, '
              f'{len(todo)} to run ({jobs} at a time, {threads} thread(s) each) -> {out_dir}',
              logger=logger)
    done, lock, failures = total - len(todo), threading.Lock(), []

    def one(item):
        nonlocal done
        arm, seed = item
        try:
            record = run_arm(config, arm, seed, out_dir, parts, cfg_options, threads, nice,
                             keep_checkpoints, val_interval=val_interval)
        except Exception as err:  # noqa: BLE001 (report every failure, keep the others going)
            with lock:
                failures.append(f'{arm.name} seed {seed}: {err}')
                print_log(f'norm_sweep: FAILED {arm.name} seed {seed}: {err}', logger=logger,
                          level=40)
            return
        with lock:
            done += 1
            wall = record['train_seconds'] + record['test_seconds']
            # ×100, one decimal: the unit of every table the report writes
            print_log(f"norm_sweep [{done}/{total}] {arm.name} seed {seed}: bbox mAP ×100 "
                      f"{record['metrics'].get('coco/bbox_mAP', float('nan')) * 100:.1f} "
                      f"({int(wall) // 60} min {int(wall) % 60:02d} s)", logger=logger)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    if failures:
        raise RuntimeError('norm_sweep: some arm-seeds failed:\n' + '\n'.join(failures))
    return load_records(out_dir)
