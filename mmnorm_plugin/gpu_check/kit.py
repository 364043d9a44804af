"""Configuration, environment report, the run of all parts under a time budget, the JSON
summary and the human table."""
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
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .measure import Budget, error_text
from .parts import PART_FUNCTIONS, Context

__all__ = ['KitConfig', 'PARTS', 'SHARES', 'run_kit', 'environment', 'format_table',
           'part_status', 'SCHEMA']

SCHEMA = 1
PARTS = tuple(PART_FUNCTIONS)
#: each part's share of the time left when it starts, against the parts after it (Inductor
#: compiles dominate on a GPU)
SHARES = {'correctness': 0.10, 'amp': 0.07, 'host_syncs': 0.06, 'layer_bench': 0.17,
          'model': 0.18, 'compile': 0.42}
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
    except Exception:  # noqa: BLE001  (no git on the device machine, or no .git)
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


def run_kit(cfg: KitConfig, out_dir: str, mmcv_ops: str = 'unknown',
            log: Callable[[str], None] = print) -> dict:
    """Run ``cfg.parts`` in order, each within its share (:data:`SHARES`) of the time left of
    ``cfg.budget_s`` (never past the whole budget; the correctness parts only stop there),
    writing ``out_dir/gpu_check.json`` after every part (a run killed from
    outside leaves the parts done so far) and ``gpu_check.txt`` (the table) at the end."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = osp.join(out_dir, 'gpu_check.json')
    device = torch.device(cfg.device)
    t0 = time.perf_counter()
    deadline = t0 + cfg.budget_s
    summary = dict(kit='mmnorm-plugin gpu-check', schema=SCHEMA,
                   started=datetime.datetime.now().isoformat(timespec='seconds'),
                   config=dataclasses.asdict(cfg), env=environment(device, mmcv_ops),
                   parts={}, ok=None)
    unknown = [p for p in cfg.parts if p not in PART_FUNCTIONS]
    if unknown:
        raise ValueError(f'unknown parts {unknown}; known: {list(PART_FUNCTIONS)}')
    cache: dict = {}
    for i, name in enumerate(cfg.parts):
        # this part's share of the time left: what earlier parts did not use goes on
        share = SHARES[name] / sum(SHARES[p] for p in cfg.parts[i:])
        budget = Budget(share * max(deadline - time.perf_counter(), 0.0), deadline)
        log(f'[gpu-check] {name}: budget {budget.seconds:.0f} s '
            f'({max(deadline - time.perf_counter(), 0):.0f} s left in all)')
        if budget.exhausted():
            part = dict(status='skipped', reason='budget', items=[])
        else:
            def save(items, name=name, budget=budget):
                summary['parts'][name] = dict(status='running', items=items,
                                              seconds=round(budget.spent(), 1),
                                              budget_s=round(budget.seconds, 1))
                _write_json(summary, json_path)

            ctx = Context(cfg=cfg, device=device, budget=budget, log=log, cache=cache,
                          save=save)
            try:
                part = PART_FUNCTIONS[name](ctx)
            except Exception as exc:  # noqa: BLE001  (a part crashing must not stop the kit)
                part = dict(status='error', items=[], **error_text(exc))
        part['status'] = part_status(part)
        part['seconds'] = round(budget.spent(), 1)
        part['budget_s'] = round(budget.seconds, 1)
        summary['parts'][name] = part
        summary['elapsed_s'] = round(time.perf_counter() - t0, 1)
        _write_json(summary, json_path)
        log(f'[gpu-check] {name}: {part["status"]} in {part["seconds"]} s')
    summary['ok'] = all(p['status'] in ('passed', 'partial', 'skipped')
                        for p in summary['parts'].values())
    summary['elapsed_s'] = round(time.perf_counter() - t0, 1)
    summary['table'] = format_table(summary)
    _write_json(summary, json_path)
    with open(osp.join(out_dir, 'gpu_check.txt'), 'w') as f:
        f.write(summary['table'] + '\n')
    return summary


# --------------------------------------------------------------------------- table
def _g(v, fmt='{:.2g}'):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return fmt.format(v)
    return '-' if v is None else str(v)


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


def _bad(it: dict) -> str:
    if it.get('status') in ('error', 'skipped'):
        return it.get('error') or it.get('reason') or ''
    return ''


def format_table(summary: dict) -> str:
    env, parts = summary['env'], summary['parts']
    lines = [f'gpu-check on {env.get("device")} ({env.get("device_name")}), torch '
             f'{env.get("torch")}, CUDA {env.get("cuda")}, mmcv ops: {env.get("mmcv_ops")}, '
             f'{summary.get("elapsed_s")} s, ok={summary.get("ok")}',
             '', f'{"part":<13}{"status":<9}{"s/budget":>14} items']
    lines += [_part_line(n, p) for n, p in parts.items()]

    if 'correctness' in parts:
        lines += ['', 'correctness (max rel. error; fp32 on the device vs CPU fp64 | CPU fp32)',
                  f'{"norm":<9}{"status":<8}{"output":>9}{"grad":>9}{"loss":>9}{"state":>9}'
                  f'{"| fp32":>9}{"unsynced":>10}']
        for it in parts['correctness'].get('items', []):
            e64, e32 = it.get('vs_cpu_fp64', {}), it.get('vs_cpu_fp32')
            worst32 = (max(v for k, v in e32.items() if k != 'state_worst_key')
                       if isinstance(e32, dict) else None)
            uns = it.get('vs_unsynced')
            worst_u = (max(v for k, v in uns.items() if k != 'state_worst_key')
                       if isinstance(uns, dict) else None)
            lines.append(f'{it["name"]:<9}{it["status"]:<8}{_g(e64.get("output")):>9}'
                         f'{_g(e64.get("grad")):>9}{_g(e64.get("loss")):>9}'
                         f'{_g(e64.get("state")):>9}{_g(worst32):>9}{_g(worst_u):>10} '
                         f'{_bad(it)[:60]}')
    if 'amp' in parts:
        lines += ['', 'autocast vs fp32 on the device (rel. error of first output, first grads, '
                  'grad error over BN\'s)',
                  f'{"norm":<9}{"status":<8}{"bf16 out":>9}{"grad":>8}{"x BN":>6}'
                  f'{"fp16 out":>9}{"grad":>8}{"x BN":>6}']
        for it in parts['amp'].get('items', []):
            cols = ''
            for key in ('bf16', 'fp16'):
                r = it.get(key, {})
                cols += (f'{_g(r.get("output")):>9}{_g(r.get("grad")):>8}'
                         f'{_g(r.get("grad_x_BN"), "{:.1f}"):>6}')
            lines.append(f'{it["name"]:<9}{it["status"]:<8}{cols} {_bad(it)[:60]}')
    if 'host_syncs' in parts:
        lines += ['', 'host syncs in a warm training step (counted | sync debug mode)',
                  f'{"norm":<9}{"status":<8}{"fp32":>6}{"debug":>14}{"bf16":>6}{"debug":>14}']
        for it in parts['host_syncs'].get('items', []):
            cols = ''
            for mode in ('fp32', 'bf16'):
                r = it.get(mode, {})
                dbg = r.get('error_mode', r.get('sync_debug_mode', '-'))
                dbg = 'ok' if dbg == 'no error' else ('no CUDA' if 'no CUDA' in str(dbg)
                                                      else str(dbg)[:12])
                if r.get('warn_mode_syncs'):
                    dbg = f'{r["warn_mode_syncs"]} syncs'
                cols += f'{_g(r.get("counted"), "{}"):>6}{dbg:>14}'
            lines.append(f'{it["name"]:<9}{it["status"]:<8}{cols} {_bad(it)[:60]}')
    if 'layer_bench' in parts:
        lines += ['', 'layer benchmark (ms: norm fwd+bwd; x BN/GN; conv3x3+norm layer; launches)',
                  f'{"shape":<22}{"dt":<5}{"norm":<6}{"ms":>9}{"x BN":>7}{"x GN":>7}'
                  f'{"layer ms":>10}{"x BN":>7}{"x floor":>8}{"launch":>7}{"ops":>5}']
        for it in parts['layer_bench'].get('items', []):
            if 'norm_ms' not in it:
                lines.append(f'{it["name"]:<33}{it["status"]} {_bad(it)[:60]}')
                continue
            launches = it.get('launches')
            launches = launches if isinstance(launches, int) else '-'
            lines.append(f'{str(tuple(it["shape"])):<22}{it["dtype"]:<5}{it["name"]:<6}'
                         f'{it["norm_ms"]:>9.3f}{it["x_BN"]:>7.2f}{it["x_GN"]:>7.2f}'
                         f'{it["layer_ms"]:>10.3f}{it["layer_x_BN"]:>7.2f}'
                         f'{_g(it.get("layer_x_floor"), "{:.2f}"):>8}{launches:>7}'
                         f'{it.get("aten_ops", "-"):>5}')
    if 'compile' in parts:
        lines += ['', f'torch.compile vs eager ({parts["compile"].get("notes", "")[:60]})',
                  f'{"norm":<9}{"status":<8}{"graphs":>7}{"breaks":>7}{"max err":>9}'
                  f'{"eager ms":>10}{"comp ms":>9}{"speedup":>8}{"1st s":>7}']
        for it in parts['compile'].get('items', []):
            err = it.get('vs_eager')
            worst = (max(v for k, v in err.items() if k != 'state_worst_key')
                     if isinstance(err, dict) else None)
            lines.append(f'{it["name"]:<9}{it["status"]:<8}{_g(it.get("graphs"), "{}"):>7}'
                         f'{_g(it.get("graph_breaks"), "{}"):>7}{_g(worst):>9}'
                         f'{_g(it.get("eager_ms"), "{:.2f}"):>10}'
                         f'{_g(it.get("compiled_ms"), "{:.2f}"):>9}'
                         f'{_g(it.get("speedup"), "{:.2f}"):>8}'
                         f'{_g(it.get("first_steps_s"), "{:.1f}"):>7} {_bad(it)[:50]}')
            for reason in it.get('break_reasons', [])[:2]:
                lines.append(f'{"":<17}break: {reason[:100]}')
    if 'model' in parts:
        lines += ['', f'whole model ({parts["model"].get("notes", "")[:70]})',
                  f'{"norm":<6}{"dt":<6}{"status":<8}{"ms":>9}{"x BN":>7}{"x GN":>7}'
                  f'{"syncs":>6}']
        for it in parts['model'].get('items', []):
            lines.append(f'{it["name"]:<6}{it.get("dtype", ""):<6}{it["status"]:<8}'
                         f'{_g(it.get("ms"), "{:.2f}"):>9}{_g(it.get("x_BN"), "{:.2f}"):>7}'
                         f'{_g(it.get("x_GN"), "{:.2f}"):>7}{_g(it.get("syncs"), "{}"):>6} '
                         f'{_bad(it)[:60]}')
    return '\n'.join(lines)


def parse_parts(text: Optional[str]) -> Optional[Sequence[str]]:
    return None if not text else tuple(p.strip() for p in text.split(',') if p.strip())
