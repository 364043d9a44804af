"""``norm_sweep``: A/B the plugin's norms on any mmdet config, with paired seeds and intervals.

A sweep is a grid of *arms*: a norm (where it goes: backbone / neck / heads) at a number of
images per batch, each trained once per seed. Every arm-seed is a separate process pair, the
project's ``tools/train.py`` then ``tools/test.py``, on a config derived from the user's
(:func:`arm_config`): only the norm and the batch (with the LR scaled linearly) change, and
seed ``s`` gives every arm the same initialization and data order (mmengine's
``randomness.seed`` seeds the weights and the sampler), so arms are compared seed by seed.

Each finished arm-seed writes one JSON record (``<out>/records/``): the arm, the base config,
every option applied to it, the seed, images per batch and LR, the git commit (and whether the
tree was dirty), package versions, wall time, peak memory and the final COCO metrics (all 0
with ``no_detections: true`` when the detector kept no box, for which mmdet's ``CocoMetric``
returns nothing: the arm-seed keeps its pairs). A record that exists is never recomputed: a killed sweep resumes where it stopped (an arm cut short
resumes from its own last checkpoint through ``tools/train.py --resume``).

The report (:func:`analyze`, :func:`format_report`, :func:`plot_sweep`) gives per arm n, mean
and std, and the paired difference against a baseline arm at the same images per batch and
against a reference arm (e.g. BN at 8 images) with the 95 % t interval (and a bootstrap
interval beside it; :mod:`mmnorm_plugin.analysis.paired_stats`). A study of one option
(``versus={'CBNbatch': 'CBN'}``) compares each variant with the arm it varies instead, drawn as
a forest of paired differences (:func:`plot_versus`); the commits the records come from are
listed under the table.
"""
import concurrent.futures
import copy
import datetime
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap
import threading
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .provenance import ROOT, provenance

__all__ = ['NORM_PRESETS', 'PARTS', 'Arm', 'parse_norm', 'arm_config', 'norm_sites',
           'run_sweep', 'load_records', 'analyze', 'format_report', 'plot_sweep',
           'plot_versus', 'write_report', 'merge_records', 'parse_versus', 'ensure_dataset',
           'update_readme', 'import_records']

PARTS = ('backbone', 'neck', 'heads')

#: name -> how the arm changes the model. ``norm_cfg``/``conv_cfg``: put at every norm site of
#: the arm's parts (``None``: no norm). ``backbone``: 'XBN' swaps ResNet/ResNeXt for the XBNBlock
#: backbone (its own norms: the config's BN, live, plus GroupNorm in each block) and puts
#: ``norm_cfg`` in neck and heads. ``frozen_backbone``: the backbone's BN frozen (statistics and
#: affine), ``norm_cfg`` in neck and heads (the fine-tune setting's "no norm" baseline with None).
#: A user spec may also give ``custom_hooks`` (appended to the config's, e.g. PreciseNormHook).
NORM_PRESETS: Dict[str, Dict] = {
    'BN': dict(norm_cfg=dict(type='BN', requires_grad=True)),
    'SyncBN': dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
    'GN': dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    'CBN': dict(norm_cfg=dict(type='CBN', requires_grad=True)),
    'MABN': dict(norm_cfg=dict(type='MABN', requires_grad=True),
                 conv_cfg=dict(type='CenConv2d')),
    'BGN': dict(norm_cfg=dict(type='BGN', num_groups=32, requires_grad=True)),
    'BKN': dict(norm_cfg=dict(type='BKN', requires_grad=True)),
    'XBN': dict(backbone='XBN', norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    'FrozenBN': dict(frozen_backbone=True, norm_cfg=None),
}
_SPEC_KEYS = {'norm_cfg', 'conv_cfg', 'backbone', 'frozen_backbone', 'parts', 'custom_hooks'}
_XBN_BACKBONES = {'ResNet': 'XBNResNet', 'ResNeXt': 'XBNResNeXt'}
# necks that take norm_cfg/conv_cfg although configs usually leave them out
_NECKS_WITH_NORM = {'FPN', 'PAFPN', 'ChannelMapper', 'HRFPN', 'NASFPN', 'NASFCOS_FPN', 'RFP',
                    'CTResNetNeck', 'YOLOV3Neck', 'DilatedEncoder', 'SSDNeck', 'FPG'}


class Arm:
    """One norm at one number of images per batch: ``name`` reads ``CBN@1``."""

    def __init__(self, norm: str, spec: Dict, batch: int):
        self.norm, self.spec, self.batch = norm, spec, int(batch)
        self.name = f'{norm}@{self.batch}'

    def __repr__(self):
        return f'Arm({self.name})'


def parse_norm(text: str, groups: Optional[int] = None) -> Tuple[str, Dict]:
    """``'CBN'`` (a preset) or ``'NAME={json spec}'``; ``groups`` replaces the group count of
    every GroupNorm-like preset (the tiny models' widths 16..128 need 8 instead of 32)."""
    if '=' in text:
        name, _, body = text.partition('=')
        try:
            spec = json.loads(body)
        except json.JSONDecodeError as err:
            raise ValueError(f'--norm {name}: the spec is not JSON ({err}): {body!r}') from None
        if not isinstance(spec, dict) or not set(spec) <= _SPEC_KEYS or not spec:
            raise ValueError(f'--norm {name}: a spec is a JSON object with keys from '
                             f'{sorted(_SPEC_KEYS)}, got {body!r}')
        return name.strip(), spec
    if text not in NORM_PRESETS:
        import difflib
        close = difflib.get_close_matches(text, NORM_PRESETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        raise ValueError(f'unknown norm {text!r}{hint}; presets: {sorted(NORM_PRESETS)}, or '
                         'NAME=\'{"norm_cfg": {...}}\'')
    spec = copy.deepcopy(NORM_PRESETS[text])
    norm_cfg = spec.get('norm_cfg')
    if groups is not None and norm_cfg and 'num_groups' in norm_cfg:
        norm_cfg['num_groups'] = int(groups)
    return text, spec


def _path_str(path: Sequence) -> str:
    out = ''
    for key in path:
        out += f'[{key}]' if isinstance(key, int) else (f'.{key}' if out else str(key))
    return out


def _find_norm_sites(node, path) -> List[Tuple]:
    sites = []
    if isinstance(node, dict):
        if 'norm_cfg' in node:
            sites.append(tuple(path))
        for key, value in node.items():
            if key not in ('norm_cfg', 'conv_cfg', 'init_cfg', 'train_cfg', 'test_cfg',
                           'loss_cls', 'loss_bbox', 'loss_mask', 'anchor_generator',
                           'bbox_coder'):
                sites += _find_norm_sites(value, path + [key])
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            sites += _find_norm_sites(value, path + [i])
    return sites


def norm_sites(model: Dict, parts: Iterable[str]) -> Dict[str, List[Tuple]]:
    """Where each part's norm configs are, as paths from ``model``.

    ``backbone``: the backbone dict. ``neck``: each neck (a FPN-like neck gets a site even when
    the config leaves ``norm_cfg`` out, since it takes one). ``heads``: every dict under a
    ``*head`` entry of the model that has a ``norm_cfg`` key (a config opts a head in with
    ``norm_cfg=None``; heads without one, such as the RPN head, have no norm to swap).
    """
    out = {}
    for part in parts:
        if part not in PARTS:
            raise ValueError(f'unknown part {part!r}; parts: {PARTS}')
        if part == 'backbone':
            out[part] = [('backbone',)] if isinstance(model.get('backbone'), dict) else []
        elif part == 'neck':
            neck = model.get('neck')
            necks = [(('neck',), neck)] if isinstance(neck, dict) else [
                (('neck', i), n) for i, n in enumerate(neck or []) if isinstance(n, dict)]
            out[part] = [p for p, n in necks
                         if 'norm_cfg' in n or n.get('type') in _NECKS_WITH_NORM]
        else:
            out[part] = [site for key, value in model.items() if key.endswith('head')
                         for site in _find_norm_sites(value, [key])]
    return out


def arm_config(config: str, arm: Arm, seed: int, parts: Sequence[str] = PARTS,
               cfg_options: Optional[Dict] = None, val_interval: Optional[int] = None):
    """The config of one arm-seed and the options that made it from ``config``.

    Returns ``(cfg, options)``: ``options`` maps dotted paths to the values set (JSON-able),
    recorded with the results. The LR is ``lr * batch / base`` with ``base`` the config's
    ``auto_scale_lr.base_batch_size`` (else its own batch size); ``auto_scale_lr`` is then
    switched off so that nothing scales it twice. Validation during training is switched off
    (``tools/test.py`` evaluates the final checkpoint once) unless ``val_interval`` asks for a
    learning curve: an evaluation every ``val_interval`` epochs (iterations for an
    iteration-based loop), recorded per point by :func:`run_arm`.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(copy.deepcopy(cfg_options))
    model = cfg.model
    spec = arm.spec
    arm_parts = list(spec.get('parts', parts))
    options: Dict[str, object] = {}
    backbone = model.get('backbone', {})
    if spec.get('backbone') == 'XBN':
        if backbone.get('type') not in _XBN_BACKBONES:
            raise ValueError(f'{arm.name}: the XBN arm swaps a ResNet/ResNeXt backbone, the '
                             f"config's is {backbone.get('type')!r}")
        options['model.backbone.type'] = _XBN_BACKBONES[backbone['type']]
        options['model.backbone.norm_eval'] = False
        arm_parts = [p for p in arm_parts if p != 'backbone']
    if spec.get('frozen_backbone'):
        options['model.backbone.norm_cfg'] = dict(type='BN', requires_grad=False)
        options['model.backbone.norm_eval'] = True
        arm_parts = [p for p in arm_parts if p != 'backbone']
    sites = norm_sites(model, arm_parts)
    for part in arm_parts:
        if not sites[part]:
            raise ValueError(f"{arm.name}: the config's {part} has no norm_cfg to swap "
                             f"(give the part's dict norm_cfg=None to opt it in, or leave "
                             f"{part} out of --parts)")
        for site in sites[part]:
            prefix = 'model.' + _path_str(site)
            options[f'{prefix}.norm_cfg'] = copy.deepcopy(spec.get('norm_cfg'))
            if 'conv_cfg' in spec:
                options[f'{prefix}.conv_cfg'] = copy.deepcopy(spec['conv_cfg'])
    if 'backbone' in arm_parts and spec.get('norm_cfg') is not None:
        # live statistics in the backbone: mmdet's norm_eval=True would freeze them
        options['model.backbone.norm_eval'] = False
    if spec.get('custom_hooks'):  # e.g. PreciseNormHook: appended to the config's own hooks
        options['custom_hooks'] = list(cfg.get('custom_hooks') or []) + \
            copy.deepcopy(list(spec['custom_hooks']))
    base_batch = cfg.get('auto_scale_lr', {}).get('base_batch_size') or \
        cfg.train_dataloader.batch_size
    lr = cfg.optim_wrapper.optimizer.lr
    options['train_dataloader.batch_size'] = arm.batch
    options['optim_wrapper.optimizer.lr'] = lr * arm.batch / base_batch
    if 'auto_scale_lr' in cfg:
        options['auto_scale_lr.enable'] = False
    options['randomness.seed'] = int(seed)
    options['train_cfg.val_interval'] = int(val_interval) if val_interval else 10 ** 9
    for key, value in options.items():
        *parents, leaf = _split(key)
        _parent(cfg, parents)[leaf] = copy.deepcopy(value)
    return cfg, options


def _parent(node, path):
    """Walk ``path``, creating missing dict levels as mmengine's ``--cfg-options`` does (e.g.
    ``randomness`` in a config that never set a seed)."""
    for key in path:
        if isinstance(key, str) and key not in node:
            node[key] = {}
        node = node[key]
    return node


def _split(dotted: str) -> List:
    keys = []
    for part in dotted.split('.'):
        while '[' in part:
            head, _, rest = part.partition('[')
            if head:
                keys.append(head)
            index, _, part = rest.partition(']')
            keys.append(int(index))
        if part:
            keys.append(part)
    return keys


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
        from ..datasets import make_photo_digits
        make_photo_digits(root)
    elif name in ('tiny_coco', 'tiny_coco_hard'):
        from ..datasets.tiny_coco import make_tiny_coco
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


def _record_path(out_dir: str, arm: Arm, seed: int) -> str:
    return osp.join(out_dir, 'records', f'{arm.norm}@{arm.batch}_seed{seed}.json')


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
    path = _record_path(out_dir, arm, seed)
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
            path = _record_path(out_dir, arm, seed)
            if not osp.isfile(path):
                continue
            with open(path) as f:
                have = json.load(f)
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
            if not osp.isfile(_record_path(out_dir, arm, s))]
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
            print_log(f"norm_sweep [{done}/{total}] {arm.name} seed {seed}: bbox mAP "
                      f"{record['metrics'].get('coco/bbox_mAP', float('nan')):.3f} "
                      f"({int(wall) // 60} min {int(wall) % 60:02d} s)", logger=logger)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    if failures:
        raise RuntimeError('norm_sweep: some arm-seeds failed:\n' + '\n'.join(failures))
    return load_records(out_dir)


def import_records(records: Sequence[Dict], out_dir: str) -> int:
    """Write records (e.g. from a committed report JSON) that ``out_dir`` lacks into
    ``out_dir/records``, verbatim, so that a sweep on a fresh machine never recomputes them;
    return how many were added."""
    added = 0
    for rec in records:
        norm, batch = _arm_key(rec['arm'])
        path = _record_path(out_dir, Arm(norm, {}, batch), rec['seed'])
        if not osp.isfile(path):
            os.makedirs(osp.dirname(path), exist_ok=True)
            with open(path + '.tmp', 'w') as f:
                json.dump(rec, f, indent=1)
            os.replace(path + '.tmp', path)
            added += 1
    return added


def load_records(source: str) -> List[Dict]:
    """Records from a sweep directory (``records/*.json``) or a report JSON (its ``records``)."""
    import glob
    if osp.isfile(source):
        with open(source) as f:
            return json.load(f)['records']
    records = []
    for path in sorted(glob.glob(osp.join(source, 'records', '*.json'))):
        with open(path) as f:
            records.append(json.load(f))
    return records


def merge_records(own: Sequence[Dict], extra: Sequence[Dict],
                  arms: Optional[Sequence[str]] = None) -> List[Dict]:
    """``own`` plus the records of ``extra`` (e.g. a committed grid's BN@1 rows that a study
    of variants pairs with) whose arm is in ``arms`` (all if None); an arm-seed ``own``
    already has is kept from ``own``. Each record keeps its commit, so the report says which
    rows were paired across commits."""
    have = {(r['arm'], r['seed']) for r in own}
    wanted = set(arms) if arms else None
    unknown = sorted(wanted - {r['arm'] for r in extra}) if wanted else []
    if unknown:
        raise ValueError(f'no records of {unknown} in the extra source (it has '
                         f"{sorted({r['arm'] for r in extra})})")
    return list(own) + [r for r in extra if (wanted is None or r['arm'] in wanted)
                        and (r['arm'], r['seed']) not in have]


def parse_versus(items: Sequence[str]) -> Dict[str, str]:
    """``['CBNbatch=CBN', ...]`` -> ``{'CBNbatch': 'CBN'}`` (a variant and the norm it varies)."""
    out = {}
    for item in items:
        variant, sep, base = item.partition('=')
        if not sep or not variant.strip() or not base.strip() or '@' in item:
            raise ValueError(f'--versus {item!r}: write VARIANT=NORM, e.g. CBNbatch=CBN '
                             '(norm names, compared at the same images per batch)')
        out[variant.strip()] = base.strip()
    return out


def _arm_key(name: str) -> Tuple[str, int]:
    norm, _, batch = name.rpartition('@')
    return norm, int(batch)


def analyze(records: Sequence[Dict], baseline: Optional[str] = 'BN',
            reference: Optional[str] = None, metric: str = 'coco/bbox_mAP',
            versus: Optional[Mapping[str, str]] = None) -> Dict:
    """Per arm: n, mean, std, and the paired differences vs ``baseline`` (a norm, at the same
    images per batch) and vs ``reference`` (an arm such as ``BN@8``), with Holm-adjusted
    p-values over each family of comparisons. ``versus`` maps a norm to the norm it is
    compared with instead of ``baseline`` (an option's variant to the default it varies)."""
    versus = dict(versus or {})
    from .paired_stats import holm, paired_difference, summarize
    by_arm: Dict[str, Dict[int, float]] = {}
    for rec in records:
        if metric in rec['metrics']:
            by_arm.setdefault(rec['arm'], {})[rec['seed']] = rec['metrics'][metric]
    arms = sorted(by_arm, key=lambda a: (_arm_key(a)[1], _arm_key(a)[0]))
    rows = []
    for arm in arms:
        norm, batch = _arm_key(arm)
        row = dict(arm=arm, norm=norm, images_per_batch=batch, **summarize(
            [by_arm[arm][s] for s in sorted(by_arm[arm])]), seeds=sorted(by_arm[arm]))
        base_norm = versus.get(norm, baseline)
        base = f'{base_norm}@{batch}' if base_norm else None
        if base in by_arm and base != arm:
            row['vs_baseline'] = dict(arm=base, **paired_difference(by_arm[arm], by_arm[base]))
        if reference in by_arm and reference != arm:
            row['vs_reference'] = dict(arm=reference,
                                       **paired_difference(by_arm[arm], by_arm[reference]))
        rows.append(row)
    for key in ('vs_baseline', 'vs_reference'):
        family = holm({r['arm']: r[key]['p'] for r in rows if key in r})
        for row in rows:
            if row['arm'] in family:
                row[key]['p_holm'] = family[row['arm']]['p_adj']
    commits: Dict[str, List[str]] = {}
    for rec in records:
        key = (rec.get('commit') or 'unknown')[:7] + (' (dirty)' if rec.get('dirty') else '')
        if rec['arm'] in by_arm and rec['arm'] not in commits.setdefault(key, []):
            commits[key].append(rec['arm'])
    return dict(metric=metric, baseline=baseline, reference=reference, versus=versus,
                rows=rows, commits=commits)


def format_report(analysis: Dict, title: str = '') -> str:
    """Markdown: one table, a row per arm (mAP in points: mean ± std (n); paired differences
    with the 95 % t interval, ``*`` where it excludes 0)."""
    from .paired_stats import format_interval, format_mean_std
    base, ref = analysis['baseline'], analysis['reference']
    versus = analysis.get('versus') or {}
    head = ['arm', f"{analysis['metric']} ×100, mean ± std (n)"]
    if versus:
        head.append('paired Δ vs the arm it varies (named) at the same images/batch [95 % CI]')
    elif base:
        head.append(f'paired Δ vs {base} at the same images/batch [95 % CI]')
    if ref:
        head.append(f'paired Δ vs {ref} [95 % CI]')
    lines = [f'**{title}**', ''] if title else []
    lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for row in analysis['rows']:
        cells = [row['arm'], format_mean_std(row)]
        if versus or base:
            diff = row.get('vs_baseline')
            cells.append('–' if diff is None else format_interval(diff) + (
                f" vs {diff['arm']}" if versus else ''))
        if ref:
            cells.append(format_interval(row['vs_reference']) if 'vs_reference' in row else '–')
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('`*`: the 95 % t interval of the paired differences (same seed = same init and '
                 'data order) excludes 0. Δ in mAP points.')
    commits = analysis.get('commits') or {}
    if len(commits) > 1:  # rows paired across commits: say which records come from where
        lines.append('')
        lines.append('Records: ' + '; '.join(f"commit {c}: {', '.join(arms)}"
                                             for c, arms in sorted(commits.items())) + '.')
    return '\n'.join(lines)


def plot_sweep(analysis: Dict, path: str, title: str = '',
               highlight: Sequence[str] = ('CBN', 'MABN', 'BGN', 'BKN', 'XBN')) -> None:
    """mAP vs images per batch, one line per norm, 95 % t intervals as error bars; the plugin's
    norms drawn thick and on top, the baselines thin and dashed, every line with its own
    marker; the reference arm as a shaded band."""
    import math
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from scipy import stats
    rows = analysis['rows']
    ref = analysis['reference']
    norms = []
    for row in rows:
        if row['arm'] != ref and row['norm'] not in norms:
            norms.append(row['norm'])
    markers = 'osD^vP*Xh<>p'
    styles = ['-', '--', '-.', ':']
    fig, ax = plt.subplots(figsize=(7, 4.5))
    batches = sorted({r['images_per_batch'] for r in rows if r['arm'] != ref})
    offsets = {n: (i - (len(norms) - 1) / 2) * 0.035 for i, n in enumerate(norms)}
    for i, norm in enumerate(norms):
        pts = [r for r in rows if r['norm'] == norm and r['arm'] != ref]
        pts.sort(key=lambda r: r['images_per_batch'])
        xs = [math.log2(r['images_per_batch']) + offsets[norm] for r in pts]
        ys = [r['mean'] * 100 for r in pts]
        errs = [(stats.t.ppf(0.975, r['n'] - 1) * r['std'] / math.sqrt(r['n']) * 100)
                if r['n'] > 1 else 0 for r in pts]
        mine = norm in highlight
        ax.errorbar(xs, ys, yerr=errs, marker=markers[i % len(markers)],
                    linestyle='-' if mine else styles[1 + i % 3], linewidth=2.4 if mine else 1.2,
                    markersize=8 if mine else 6, capsize=4, zorder=3 if mine else 2,
                    label=f"{norm} (n={min(r['n'] for r in pts)})")
    for row in rows:
        if row['arm'] == ref and row['n']:
            half = (stats.t.ppf(0.975, row['n'] - 1) * row['std'] / math.sqrt(row['n']) * 100
                    if row['n'] > 1 else 0)
            ax.axhspan(row['mean'] * 100 - half, row['mean'] * 100 + half, color='grey',
                       alpha=0.25, zorder=1)
            ax.axhline(row['mean'] * 100, color='grey', linewidth=1, zorder=1,
                       label=f"{ref} (reference, n={row['n']})")
    ax.set_xticks([math.log2(b) for b in batches], [str(b) for b in batches])
    ax.set_xlabel('images per batch')
    ax.set_ylabel(f"{analysis['metric']} × 100 (mean, 95 % CI)")
    if title:
        ax.set_title(textwrap.fill(title, 70))  # a long title would run off the figure
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_versus(analysis: Dict, path: str, title: str = '') -> None:
    """A forest of the paired differences ``variant - the arm it varies`` (mAP points, 95 % t
    interval, n in the label), one line per compared row, zero marked: at a glance, which
    option helps, hurts, or cannot be told apart."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in analysis['rows'] if r.get('vs_baseline', {}).get('mean') is not None]
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.4))
    for i, row in enumerate(reversed(rows)):
        diff = row['vs_baseline']
        mean = diff['mean'] * 100
        lo, hi = (diff['ci'][0] * 100, diff['ci'][1] * 100) if diff['ci'] else (mean, mean)
        # coloured only where an interval exists and excludes 0 (n=1 has none: grey)
        color = 'tab:grey' if not diff['ci'] else (
            'tab:green' if lo > 0 else ('tab:red' if hi < 0 else 'tab:grey'))
        ax.errorbar([mean], [i], xerr=[[mean - lo], [hi - mean]], fmt='o', color=color,
                    capsize=4, markersize=7)
    ax.set_yticks(range(len(rows)), [f"{r['arm']} − {r['vs_baseline']['arm']} "
                                     f"(n={r['vs_baseline']['n']})" for r in reversed(rows)])
    ax.axvline(0, color='black', linewidth=1)
    ax.set_xlabel(f"paired Δ {analysis['metric']} × 100 (mean, 95 % t interval)")
    if title:
        # over the figure, not the axes: the row labels push the axes right
        fig.suptitle(textwrap.fill(title, 90), fontsize=10)
    ax.grid(axis='x', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records: Sequence[Dict], out_prefix: str, baseline: Optional[str] = 'BN',
                 reference: Optional[str] = None, title: str = '',
                 metric: str = 'coco/bbox_mAP',
                 versus: Optional[Mapping[str, str]] = None) -> Dict:
    """``<prefix>.md`` (table), ``<prefix>.json`` (records + analysis), ``<prefix>.png`` (mAP
    vs images per batch, or with ``versus`` the forest of paired differences)."""
    analysis = analyze(records, baseline, reference, metric, versus)
    text = format_report(analysis, title)
    os.makedirs(osp.dirname(osp.abspath(out_prefix)), exist_ok=True)
    with open(out_prefix + '.md', 'w') as f:
        f.write(text + '\n')
    with open(out_prefix + '.json', 'w') as f:
        json.dump(dict(title=title, analysis=analysis, records=list(records)), f, indent=1)
    if versus and any('vs_baseline' in r for r in analysis['rows']):
        plot_versus(analysis, out_prefix + '.png', title)
    elif analysis['rows']:
        plot_sweep(analysis, out_prefix + '.png', title)
    return dict(analysis=analysis, text=text)


def update_readme(path: str, section: str, text: str) -> None:
    """Replace what stands between ``<!-- norm_sweep:SECTION -->`` and
    ``<!-- /norm_sweep:SECTION -->`` in ``path`` by ``text`` (the markers must exist)."""
    begin, end = f'<!-- norm_sweep:{section} -->', f'<!-- /norm_sweep:{section} -->'
    with open(path) as f:
        content = f.read()
    if content.count(begin) != 1 or content.count(end) != 1 or \
            content.index(begin) > content.index(end):
        raise ValueError(f'{path} needs exactly one {begin} ... {end} block')
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    with open(path, 'w') as f:
        f.write(f'{head}{begin}\n{text.strip()}\n{end}{tail}')
