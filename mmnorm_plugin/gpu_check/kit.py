"""Configuration, environment report, the run of the parts (:data:`.parts.REGISTRY`) under a
time budget, the JSON summary and the table composed from each part's rows."""
import dataclasses
import datetime
import json
import math
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

from .measure import Budget, error_text
from .parts import REGISTRY, Context, Part

__all__ = ['KitConfig', 'PARTS', 'SHARES', 'run_kit', 'check_parts', 'environment',
           'format_table', 'part_status', 'SCHEMA']

SCHEMA = 1
#: the part names in run order and their time shares, as :data:`.parts.REGISTRY` declares them
PARTS = tuple(p.name for p in REGISTRY)
SHARES = {p.name: p.share for p in REGISTRY}
_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@dataclasses.dataclass
class KitConfig:
    """Sizes and budgets; :meth:`for_device` gives the presets (CUDA: the detection shapes of
    :data:`mmnorm_plugin.benchmarks.layer_benchmark.DETECTION_SHAPES` and a ResNet-50 at 800x1216; CPU:
    small enough for 2 cores in a few minutes)."""
    device: str
    budget_s: float
    parts: Tuple[str, ...] = PARTS
    seed: int = 0
    # small network (correctness, amp, host syncs)
    net_channels: int = 16
    small_groups: int = 4
    net_input: Tuple[int, ...] = (4, 3, 16, 16)
    steps: int = 6
    sync_warmup: int = 5
    # layer benchmark
    bench_shapes: Dict[str, Tuple[int, int, int, int]] = dataclasses.field(
        default_factory=lambda: {'fpn': (2, 32, 32, 32), 'roi': (32, 32, 7, 7)})
    bench_dtypes: Tuple[str, ...] = ('fp32', 'bf16')
    bench_warmup: int = 5
    bench_iters: int = 5
    # torch.compile
    compile_backend: str = 'aot_eager'
    compile_channels: int = 16
    compile_input: Tuple[int, ...] = (4, 3, 16, 16)
    compile_steps: int = 3
    compile_time_steps: int = 3
    # whole model
    model_depth: int = 50
    model_input: Tuple[int, ...] = (2, 3, 64, 64)
    model_dtypes: Tuple[str, ...] = ('fp32', )
    model_warmup: int = 1
    model_iters: int = 3

    @classmethod
    def for_device(cls, device: str, **overrides) -> 'KitConfig':
        if device.startswith('cuda'):
            from mmnorm_plugin.benchmarks.layer_benchmark import DETECTION_SHAPES
            p2, p3, roi = DETECTION_SHAPES
            base = dict(device=device, budget_s=240.0, net_channels=32, small_groups=8,
                        net_input=(8, 3, 32, 32), bench_shapes={'P2': p2, 'P3': p3, 'RoI': roi},
                        bench_iters=20, compile_backend='inductor', compile_channels=64,
                        compile_input=(8, 3, 64, 64), compile_steps=4, compile_time_steps=10,
                        model_input=(2, 3, 800, 1216), model_dtypes=('fp32', 'bf16'),
                        model_warmup=2, model_iters=5)
        else:
            base = dict(device=device, budget_s=180.0)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module)
        return str(getattr(mod, '__version__', 'unknown'))
    except Exception as exc:  # noqa: BLE001
        return f'not importable: {type(exc).__name__}'


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=_ROOT, timeout=10,
                             capture_output=True, text=True)
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001  (no git on the machine, or no .git)
        return None


def environment(device: torch.device, mmcv_ops: str = 'unknown') -> dict:
    env = dict(python=sys.version.split()[0], platform=platform.platform(),
               torch=torch.__version__, cuda=torch.version.cuda,
               cudnn=(torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                      else None),
               numpy=_version('numpy'), triton=_version('triton'), mmengine=_version('mmengine'),
               mmcv=_version('mmcv'), mmdet=_version('mmdet'), mmcv_ops=mmcv_ops,
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               commit=_git_commit(), device=str(device))
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f'{props.major}.{props.minor}',
                   gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   tf32_cudnn=torch.backends.cudnn.allow_tf32,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        env['device_name'] = platform.processor() or 'cpu'
    return env


def part_status(part: dict) -> str:
    """passed / partial (budget ran out, everything that ran passed) / failed / error /
    skipped, from a part's own status or its items."""
    if part.get('status') in ('error', 'skipped'):
        return part['status']
    statuses = [it.get('status') for it in part.get('items', [])]
    if any(s in ('failed', 'error') for s in statuses):
        return 'failed'
    if not statuses or all(s == 'skipped' for s in statuses):
        return 'skipped'
    if any(s == 'skipped' for s in statuses):
        return 'partial'
    return 'passed'


def _clean(obj):
    """JSON without NaN/inf (strings instead) and with tuples as lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _write_json(summary: dict, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(_clean(summary), f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def _by_name(registry: Sequence[Part]) -> Dict[str, Part]:
    known: Dict[str, Part] = {}
    for part in registry:
        if part.name in known:
            raise ValueError(f'two parts named {part.name!r}')
        known[part.name] = part
    return known


def check_parts(names: Sequence[str], registry: Sequence[Part] = REGISTRY) -> None:
    """Refuses, in one line, part names the registry does not know."""
    known = _by_name(registry)
    unknown = [p for p in names if p not in known]
    if unknown:
        raise ValueError(f'unknown parts {unknown}; known: {list(known)}')


def run_kit(cfg: KitConfig, out_dir: str, mmcv_ops: str = 'unknown',
            log: Callable[[str], None] = print, registry: Sequence[Part] = REGISTRY) -> dict:
    """Run ``cfg.parts`` in order, each within its share (:attr:`.parts.Part.share`) of the
    time left of ``cfg.budget_s`` (never past the whole budget; the correctness parts only stop
    there), writing ``out_dir/gpu_check.json`` after every item (a run killed from outside
    leaves the items done so far) and ``gpu_check.txt`` (the table) at the end.

    Args:
        registry (sequence of Part): the parts ``cfg.parts`` names are taken from.
            Default: :data:`.parts.REGISTRY`
    """
    check_parts(cfg.parts, registry)
    known = _by_name(registry)
    os.makedirs(out_dir, exist_ok=True)
    json_path = osp.join(out_dir, 'gpu_check.json')
    device = torch.device(cfg.device)
    t0 = time.perf_counter()
    deadline = t0 + cfg.budget_s
    summary = dict(kit='mmnorm-plugin gpu-check', schema=SCHEMA,
                   started=datetime.datetime.now().isoformat(timespec='seconds'),
                   config=dataclasses.asdict(cfg), env=environment(device, mmcv_ops),
                   parts={}, ok=None)
    cache: dict = {}
    for i, name in enumerate(cfg.parts):
        # this part's share of the time left: what earlier parts did not use goes on
        share = known[name].share / sum(known[p].share for p in cfg.parts[i:])
        budget = Budget(share * max(deadline - time.perf_counter(), 0.0), deadline)
        log(f'[gpu-check] {name}: budget {budget.seconds:.0f} s '
            f'({max(deadline - time.perf_counter(), 0):.0f} s left in all)')

        def save(items, name=name, budget=budget):
            summary['parts'][name] = dict(status='running', items=items,
                                          seconds=round(budget.spent(), 1),
                                          budget_s=round(budget.seconds, 1))
            _write_json(summary, json_path)

        ctx = Context(cfg=cfg, device=device, budget=budget, log=log, cache=cache, save=save)
        part = summary['parts'][name] = _run_part(known[name], ctx)
        summary['elapsed_s'] = round(time.perf_counter() - t0, 1)
        _write_json(summary, json_path)
        log(f'[gpu-check] {name}: {part["status"]} in {part["seconds"]} s')
    summary['ok'] = all(p['status'] in ('passed', 'partial', 'skipped')
                        for p in summary['parts'].values())
    summary['elapsed_s'] = round(time.perf_counter() - t0, 1)
    summary['table'] = format_table(summary, registry)
    _write_json(summary, json_path)
    with open(osp.join(out_dir, 'gpu_check.txt'), 'w') as f:
        f.write(summary['table'] + '\n')
    return summary


def _run_part(part: Part, ctx: Context) -> dict:
    """One part's result with its ``status``, ``seconds`` and ``budget_s``: skipped when its
    budget is gone before it starts, ``error`` when it raises (the kit goes on)."""
    if ctx.budget.exhausted():
        result = dict(status='skipped', reason='budget', items=[])
    else:
        try:
            result = part.run(ctx)
        except Exception as exc:  # noqa: BLE001  (a part crashing must not stop the kit)
            result = dict(status='error', items=[], **error_text(exc))
    result['status'] = part_status(result)
    result['seconds'] = round(ctx.budget.spent(), 1)
    result['budget_s'] = round(ctx.budget.seconds, 1)
    return result


# --------------------------------------------------------------------------- table
def _part_line(name: str, part: dict) -> str:
    items = part.get('items', [])
    counts = {}
    for it in items:
        counts[it.get('status')] = counts.get(it.get('status'), 0) + 1
    detail = ', '.join(f'{v} {k}' for k, v in counts.items())
    if part.get('reason'):
        detail = f'{detail}; {part["reason"]}' if detail else part['reason']
    if part.get('error'):
        detail = part['error'][:70]
    return (f'{name:<13}{part.get("status", "?"):<9}{part.get("seconds", 0):>7.1f}/'
            f'{part.get("budget_s", 0):<6.0f} {detail}')


def format_table(summary: Mapping, registry: Sequence[Part] = REGISTRY) -> str:
    """The text table of a summary: the run's header, one line per part, then each part's
    own section (:attr:`.parts.Part.rows`) in run order; a part the registry does not know
    (an older JSON) has its line only, one whose rows raise a line saying so."""
    env, parts = summary['env'], summary['parts']
    known = _by_name(registry)
    lines = [f'gpu-check on {env.get("device")} ({env.get("device_name")}), torch '
             f'{env.get("torch")}, CUDA {env.get("cuda")}, mmcv ops: {env.get("mmcv_ops")}, '
             f'{summary.get("elapsed_s")} s, ok={summary.get("ok")}',
             '', f'{"part":<13}{"status":<9}{"s/budget":>14} items']
    lines += [_part_line(n, p) for n, p in parts.items()]
    for name, part in parts.items():
        spec = known.get(name)
        if spec is None or spec.rows is None:
            continue
        try:
            lines += [''] + spec.rows(part)
        except Exception as exc:  # noqa: BLE001  (the JSON holds the items; the table goes on)
            lines += ['', f'{name}: rows not formatted: {type(exc).__name__}: {exc}'[:200]]
    return '\n'.join(lines)


def parse_parts(text: Optional[str]) -> Optional[Sequence[str]]:
    return None if not text else tuple(p.strip() for p in text.split(',') if p.strip())
