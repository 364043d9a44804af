"""What a sweep's runs cost on the machine that ran them, read from mmengine's own logs.

A record's ``train_seconds`` is the wall time of the training process that finished the run:
after a stop and ``--resume`` it covers only the last session, and a paused machine inflates
it. Every training session leaves ``runs/NORM@B_seedS/train/TIMESTAMP/`` with mmengine's
``vis_data/scalars.json`` (per logging window, the mean iteration ``time``; with the configs'
``log_processor.window_size`` equal to the logger's interval it is the window's exact mean)
and its text log. From them, per arm-seed:

* ``iteration_seconds``: the training iterations, each counted once (a window redone after a
  resume counts from the session that kept it): the run's training cost as if uninterrupted;
* ``evaluation_seconds``: the evaluations during training (``--val-interval``), each its mean
  iteration time times its iterations (the text log's ``[i/N]``);
* ``session_seconds``: the sum over sessions of the span from the first to the last line of
  each session's log: what the run actually took, redone work and pauses included.

``run_seconds`` (iterations + evaluations + the final ``tools/test.py``, the record's
``test_seconds``) is the per-run cost quoted in the docs; ``spent_seconds`` (sessions + test)
times the threads is the core time spent. Both are wall-clock measurements under whatever else
ran on the machine (:func:`format_costs` says how many jobs shared it).
"""
import datetime
import glob
import json
import os.path as osp
import re
import statistics
from typing import Dict, List, Optional, Sequence

from .records import arm_key

__all__ = ['run_cost', 'sweep_costs', 'format_costs', 'write_costs']

_STAMP = re.compile(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ', re.M)
_VAL_ITERS = re.compile(r'Epoch\(val\)\s*\[\d+\]\[\s*\d+/(\d+)\]')


def _sessions(train_dir: str) -> List[str]:
    # mmengine names a session's folder by its start time, so name order is time order
    return sorted(d for d in glob.glob(osp.join(train_dir, '*'))
                  if osp.isfile(osp.join(d, 'vis_data', 'scalars.json')))


def _entries(session: str) -> List[Dict]:
    entries = []
    with open(osp.join(session, 'vis_data', 'scalars.json')) as f:
        for line in f:
            try:
                entries.append(json.loads(line))
            except ValueError:  # a killed session's half-written last line: not a window
                continue
    return entries


def _log_text(session: str) -> str:
    path = osp.join(session, osp.basename(session) + '.log')
    if not osp.isfile(path):
        return ''
    with open(path, errors='replace') as f:
        return f.read()


def _span_seconds(text: str) -> float:
    stamps = _STAMP.findall(text)
    if len(stamps) < 2:
        return 0.0
    first, last = (datetime.datetime.strptime(s, '%Y/%m/%d %H:%M:%S')
                   for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def run_cost(train_dir: str) -> Optional[Dict]:
    """The cost of one arm-seed's training from the sessions under ``train_dir`` (see the
    module docstring); None when no session logged anything."""
    sessions = _sessions(train_dir)
    if not sessions:
        return None
    train: Dict[int, float] = {}  # iteration step -> mean time of the window ending there
    evals: Dict[int, float] = {}  # evaluated epoch -> mean time of its iterations
    eval_iters, spans = None, 0.0
    for session in sessions:  # later sessions override: they are the ones the run kept
        for entry in _entries(session):
            if 'time' not in entry or 'step' not in entry:
                continue
            (train if 'iter' in entry else evals)[entry['step']] = entry['time']
        text = _log_text(session)
        spans += _span_seconds(text)
        found = _VAL_ITERS.findall(text)
        if found:
            eval_iters = int(found[-1])
    iteration_seconds, previous = 0.0, 0
    for step in sorted(train):
        iteration_seconds += train[step] * (step - previous)
        previous = step
    evaluation = None if evals and eval_iters is None else \
        sum(evals.values()) * (eval_iters or 0)
    # the fields records.COST_FIELDS names (check_record validates them in a record)
    return dict(sessions=len(sessions), iterations=previous,
                iteration_seconds=round(iteration_seconds, 1),
                evaluations=len(evals),
                evaluation_seconds=None if evaluation is None else round(evaluation, 1),
                session_seconds=round(spans, 1))


def sweep_costs(out_dir: str, records: Sequence[Dict]) -> List[Dict]:
    """Per record with a run directory under ``out_dir/runs`` (or, without one, the ``cost``
    the runner stored in the record when it finished): arm, seed, threads, the :func:`run_cost`
    fields, ``test_seconds``, ``run_seconds`` and ``spent_seconds``."""
    out = []
    for rec in sorted(records, key=lambda r: (arm_key(r['arm']), r['seed'])):
        cost = run_cost(osp.join(out_dir, 'runs', f"{rec['arm']}_seed{rec['seed']}", 'train'))
        if cost is None:  # no logs here (e.g. imported records): what the record kept
            cost = rec.get('cost')
        if cost is None:
            continue
        test = float(rec.get('test_seconds') or 0.0)
        run = cost['iteration_seconds'] + (cost['evaluation_seconds'] or 0.0) + test
        out.append(dict(arm=rec['arm'], seed=rec['seed'], threads=int(rec.get('threads') or 1),
                        **cost, test_seconds=test, run_seconds=round(run, 1),
                        spent_seconds=round(cost['session_seconds'] + test, 1)))
    return out


def _minutes(seconds: float) -> str:
    return f'{seconds / 60:.0f}'


def format_costs(costs: Sequence[Dict], jobs: int = 1, machine: str = '') -> str:
    """Markdown: per arm, the per-run cost (median and range over its seeds, in minutes) and
    what was spent; then the core-hours spent in all."""
    arms: Dict[str, List[Dict]] = {}
    for cost in costs:
        arms.setdefault(cost['arm'], []).append(cost)
    lines = ['| arm | runs | iterations per run | per run, min: median (range) | of which '
             'evaluations during training, min | sessions (resumes) | spent, core-min |',
             '|---|---|---|---|---|---|---|']
    for arm in sorted(arms, key=arm_key):
        rows = arms[arm]
        runs = [r['run_seconds'] for r in rows]
        evals = [r['evaluation_seconds'] or 0.0 for r in rows]
        spent = sum(r['spent_seconds'] * r['threads'] for r in rows)
        sessions = sum(r['sessions'] for r in rows)
        lines.append(
            f"| {arm} | {len(rows)} | {max(r['iterations'] for r in rows)} | "
            f'{_minutes(statistics.median(runs))} ({_minutes(min(runs))}–{_minutes(max(runs))})'
            f' | {_minutes(statistics.median(evals))} | {sessions} ({sessions - len(rows)}) | '
            f'{_minutes(spent)} |')
    total = sum(r['spent_seconds'] * r['threads'] for r in costs) / 3600
    threads = '/'.join(map(str, sorted({r['threads'] for r in costs})))
    where = f' on {machine}' if machine else ''
    lines += ['', f'Wall-clock minutes measured here{where}, up to {jobs} runs at a time, '
              f"{threads} thread(s) each. A run's cost is its training iterations (each counted "
              'once), its evaluations during training and its final test; "spent" is wall '
              'time × threads, with what stops, resumes and pauses cost. Core-hours spent on '
              f'these runs: {total:.1f}.']
    return '\n'.join(lines)


def write_costs(out_dir: str, records: Sequence[Dict], prefix: str, title: str = '',
                jobs: int = 1) -> str:
    """``<prefix>_cost.json`` (the per-run costs, for the docs' ``cost-SETTING`` block) and
    ``<prefix>_cost.md``; returns the Markdown."""
    costs = sweep_costs(out_dir, records)
    machines = sorted({r['machine'] for r in records if r.get('machine')})
    machine = '; '.join(machines)
    with open(prefix + '_cost.json', 'w') as f:
        json.dump(dict(title=title, jobs=jobs, machine=machine, costs=costs), f, indent=1)
    text = format_costs(costs, jobs, machine)
    with open(prefix + '_cost.md', 'w') as f:
        f.write((f'**{title}: cost per run**\n\n' if title else '') + text + '\n')
    return text
