"""Can a proxy see what the plugin's norms exist to fix? The positive control and the plateau.

A small-batch norm is worth ranking on a proxy only where that proxy reproduces BN's
small-batch failure, and only once the runs are trained rather than snapshotted early (a run
stopped far below its plateau ranks how fast arms start, and the arm with more optimizer steps
wins). Two checks, both on paired seeds (:mod:`mmnorm_plugin.analysis.paired_stats`):

* :func:`plateau`: the large-batch references' learning curves (the evaluations a sweep run
  with ``--val-interval`` records): the mean over seeds of the last two points must differ by
  at most ``margin`` (default 1 mAP point), on at least :data:`MIN_CURVE_SEEDS` seeds of every
  reference (one seed's flat tail is a pilot, not a plateau).
* :func:`positive_control`: BN at ``large`` images per batch beats BN at ``small`` (paired,
  n >= 5, 95 % interval above 0) *and* BN loses more from the small batch than a
  batch-independent norm does: the interaction ``(BN@large - BN@small) - (GN@large -
  GN@small)``, per seed, has its interval above 0. Both must hold, so no multiplicity
  adjustment is needed between them (an intersection of two tests at 0.05 each).

:func:`format_control` writes both as Markdown, :func:`control_sentence` says one setting's
verdict in a sentence and :func:`control_summary` every kept setting's, :func:`plot_curves`
draws the curves.
"""
import math
import textwrap
from typing import Dict, Optional, Sequence, Tuple

from .report import MARGIN

__all__ = ['MIN_SEEDS', 'MIN_CURVE_SEEDS', 'curves', 'plateau', 'positive_control',
           'format_control', 'plot_curves', 'control_sentence', 'control_summary']

#: the protocol's least number of paired seeds for a claim
MIN_SEEDS = 5
#: the least number of seeds whose learning curves decide a reference's plateau (issue 29:
#: "learning curves of BN and GN at 8 images, >= 3 seeds")
MIN_CURVE_SEEDS = 3


def _by_arm(records: Sequence[Dict], metric: str) -> Dict[str, Dict[int, float]]:
    out: Dict[str, Dict[int, float]] = {}
    for rec in records:
        if metric in rec['metrics']:
            out.setdefault(rec['arm'], {})[rec['seed']] = rec['metrics'][metric]
    return out


def curves(records: Sequence[Dict], arm: str, metric: str = 'coco/bbox_mAP') -> Dict:
    """``{'steps': [...], 'seeds': [...], 'values': {seed: [value per step]}}`` over the steps
    every recorded seed of ``arm`` evaluated (seeds without a curve are left out)."""
    per_seed = {}
    for rec in records:
        if rec['arm'] == arm and rec.get('curve'):
            per_seed[rec['seed']] = {p['step']: p['metrics'][metric] for p in rec['curve']
                                     if metric in p['metrics']}
    if not per_seed:
        return dict(steps=[], seeds=[], values={})
    steps = sorted(set.intersection(*(set(v) for v in per_seed.values())))
    return dict(steps=steps, seeds=sorted(per_seed),
                values={s: [per_seed[s][t] for t in steps] for s in sorted(per_seed)})


def plateau(records: Sequence[Dict], arms: Sequence[str], metric: str = 'coco/bbox_mAP',
            margin: float = MARGIN, min_seeds: int = MIN_CURVE_SEEDS) -> Dict:
    """Per arm: the last two evaluation steps, the mean over seeds at each, their paired
    difference (last - previous, with its interval), ``plateaued``: whether the two means
    differ by at most ``margin`` (``None`` without two steps), and ``decided``: whether at least
    ``min_seeds`` seeds have the curve. ``status`` is 'no' when a decided arm has not
    plateaued, 'yes' when every arm is decided and has, else 'pending' (an arm without a
    curve, or with fewer seeds, decides nothing); ``all_plateaued`` is ``status == 'yes'``."""
    from ..paired_stats import paired_difference
    out = dict(metric=metric, margin=margin, min_seeds=min_seeds, arms={})
    for arm in arms:
        c = curves(records, arm, metric)
        if len(c['steps']) < 2:
            out['arms'][arm] = dict(n=len(c['seeds']), steps=c['steps'], plateaued=None,
                                    decided=False)
            continue
        prev = {s: v[-2] for s, v in c['values'].items()}
        last = {s: v[-1] for s, v in c['values'].items()}
        diff = paired_difference(last, prev)
        out['arms'][arm] = dict(n=len(c['seeds']), steps=c['steps'][-2:],
                                means=[sum(prev.values()) / len(prev),
                                       sum(last.values()) / len(last)],
                                difference=diff, plateaued=abs(diff['mean']) <= margin,
                                decided=len(c['seeds']) >= min_seeds)
    judged = out['arms'].values()
    out['status'] = ('no' if any(a['decided'] and not a['plateaued'] for a in judged) else
                     'yes' if judged and all(a['decided'] and a['plateaued'] for a in judged)
                     else 'pending')
    out['all_plateaued'] = out['status'] == 'yes'
    return out


def positive_control(records: Sequence[Dict], small: Sequence[int] = (1, 2), large: int = 8,
                     norm: str = 'BN', independent: str = 'GN',
                     metric: str = 'coco/bbox_mAP', min_seeds: int = MIN_SEEDS) -> Dict:
    """For each ``small`` batch with records: ``loss`` = ``norm@large - norm@small`` and
    ``independent_loss`` likewise, per seed; ``interaction`` = their per-seed difference over
    the seeds all four arms share; ``passed`` when ``loss`` and ``interaction`` both have at
    least ``min_seeds`` pairs and intervals above 0 (``shown``: each of the two on its own);
    ``status`` 'passes', 'fails' (enough
    pairs, an interval not above 0) or 'pending' (fewer pairs: nothing decided). At the top:
    ``passed`` when every compared small batch passed, ``status`` likewise ('fails' wins over
    'pending')."""
    from ..paired_stats import paired_difference
    by_arm = _by_arm(records, metric)
    big, ind_big = by_arm.get(f'{norm}@{large}', {}), by_arm.get(f'{independent}@{large}', {})
    out = dict(metric=metric, norm=norm, independent=independent, large=large,
               min_seeds=min_seeds, batches={})
    for b in small:
        lo, ind_lo = by_arm.get(f'{norm}@{b}'), by_arm.get(f'{independent}@{b}')
        if not lo or not ind_lo:
            continue
        loss = paired_difference(big, lo)
        ind_loss = paired_difference(ind_big, ind_lo)
        seeds = sorted(set(big) & set(lo) & set(ind_big) & set(ind_lo))
        inter = paired_difference({s: big[s] - lo[s] for s in seeds},
                                  {s: ind_big[s] - ind_lo[s] for s in seeds})
        # too few pairs decide nothing either way: 'pending', not 'fails'
        decided = all(d['n'] >= min_seeds and d['ci'] is not None for d in (loss, inter))
        # each half of the control on its own: its interval lies above 0
        shown = {k: d['ci'] is not None and d['ci'][0] > 0
                 for k, d in (('loss', loss), ('interaction', inter))}
        passed = decided and all(shown.values())
        out['batches'][b] = dict(loss=loss, independent_loss=ind_loss, interaction=inter,
                                 shown=shown, passed=passed,
                                 status='passes' if passed else 'fails' if decided else 'pending')
    out['passed'] = bool(out['batches']) and all(v['passed'] for v in out['batches'].values())
    statuses = {v['status'] for v in out['batches'].values()}
    out['status'] = ('passes' if out['passed'] else 'fails' if 'fails' in statuses else
                     'pending')
    return out


def _interval(diff: Dict) -> str:
    """``+3.1 [+1.2, +5.0] (n=5)``, or ``+3.1 (n=1)`` where there is no interval."""
    from ..paired_stats import format_interval
    text = format_interval(diff, mark='')
    return text if diff['ci'] is None or diff['mean'] is None else f"{text} (n={diff['n']})"


def format_control(control: Dict, plateau_: Optional[Dict] = None, title: str = '') -> str:
    """Markdown: the plateau table (when given) and the positive-control table, each with its
    verdict in words."""
    lines = [f'**{title}**', ''] if title else []
    if plateau_ is not None:
        margin = plateau_['margin'] * 100
        lines += ['| reference | n | last two evaluations (step) | mean ×100 at each | '
                  f'last − previous [95 % CI] | plateau (within ±{margin:g}) |',
                  '|---|---|---|---|---|---|']
        for arm, a in plateau_['arms'].items():
            if a['plateaued'] is None:
                lines.append(f"| {arm} | {a['n']} | – | – | – | no curve |")
                continue
            verdict = 'yes' if a['plateaued'] else 'no'
            if not a['decided']:
                verdict += f" (pilot: fewer than {plateau_['min_seeds']} seeds)"
            lines.append(f"| {arm} | {a['n']} | {a['steps'][0]}, {a['steps'][1]} | "
                         f"{a['means'][0] * 100:.1f}, {a['means'][1] * 100:.1f} | "
                         f"{_interval(a['difference'])} | {verdict} |")
        summary = {'yes': 'every reference has plateaued.',
                   'no': 'NOT every reference has plateaued.',
                   'pending': f"not decided yet: a reference has fewer than "
                              f"{plateau_['min_seeds']} seeds with a learning curve."}
        lines += ['', 'Plateau: ' + summary[plateau_['status']], '']
    n, ind, big = control['norm'], control['independent'], control['large']
    lines += [f'| small batch | {n}@{big} − {n}@b [95 % CI] | {ind}@{big} − {ind}@b [95 % CI] '
              f'| interaction ({n} loss − {ind} loss) [95 % CI] | control |',
              '|---|---|---|---|---|']
    for b, v in sorted(control['batches'].items(), key=lambda kv: int(kv[0])):
        status = v['status'] if v['status'] != 'pending' else (
            f"not decided: fewer than {control['min_seeds']} pairs")
        lines.append(f"| b = {b} | {_interval(v['loss'])} | {_interval(v['independent_loss'])} | "
                     f"{_interval(v['interaction'])} | {status} |")
    lines += ['', f"Δ in mAP points, paired over seeds; the control passes where {n}@{big} − "
              f"{n}@b and the interaction both have at least {control['min_seeds']} pairs "
              'and a 95 % interval above 0.', '', control_sentence(control, plateau_)]
    return '\n'.join(lines)


def control_sentence(control: Dict, plateau_: Optional[Dict] = None) -> str:
    """One sentence: does this proxy reproduce BN's small-batch failure?"""
    n, ind, big = control['norm'], control['independent'], control['large']
    if not control['batches']:
        return ('Positive control: not run yet (no arm below the reference batch recorded; '
                'runs in progress).')
    parts = []
    for b, v in sorted(control['batches'].items(), key=lambda kv: int(kv[0])):
        # differences, not "loses": a negative mean (a gain) then reads as what it is
        parts.append(f"at {b} image{'s' if int(b) > 1 else ''} per batch {n}@{big} − {n}@{b} "
                     f"is {_interval(v['loss'])} mAP points and the interaction "
                     f"({n}'s loss − {ind}'s) {_interval(v['interaction'])}")
    status = control['status']
    verdict = {'passes': 'passes', 'fails': 'fails', 'pending': 'not passed yet'}[status]
    trained = '' if plateau_ is None else {
        'yes': ' (references plateaued)',
        'no': ' (but the references have NOT plateaued)',
        'pending': " (the references' plateau is not decided yet)"}[plateau_['status']]
    pilot = (f"fewer than {control['min_seeds']} paired seeds decide nothing; the pilot so far: "
             if status == 'pending' else '')
    # what the verdict means for the tables drawn from this proxy, said plainly
    meaning = ''
    if status == 'passes':
        meaning = (' Until its references plateau, nothing is ranked on it.'
                   if plateau_ is not None and not plateau_['all_plateaued'] else
                   " This proxy reproduces BN's small-batch failure: norms may be ranked on it.")
    elif status == 'fails':  # name the half of the control not shown, per batch
        claims = dict(loss=f'loses against {big} images', interaction=f'loses more than {ind}')
        unmet = [f'that {n} at {b} {claims[half]}'
                 for b, v in sorted(control['batches'].items(), key=lambda kv: int(kv[0]))
                 for half in ('loss', 'interaction') if not v['shown'][half]]
        meaning = (f" Not shown (interval reaching 0): {'; '.join(unmet)}. This proxy does not "
                   "reproduce BN's small-batch failure at this budget: it shows only that each "
                   'method trains and evaluates, and ranks nothing.')
    return f"Positive control {verdict}{trained}: {pilot}" + '; '.join(parts) + '.' + meaning


def control_summary(settings: Sequence[Tuple[str, Dict, Dict]]) -> str:
    """One sentence over every kept setting of a proxy: ``(label, control, plateau)`` each.

    A setting counts as passed only with its references plateaued too (a pass below the
    plateau ranks how fast arms start); one that failed or is not decided yet ranks nothing,
    so the advice then rests on the papers' published numbers."""
    if not settings:
        raise ValueError('no kept setting to summarize')
    # a pass on references still climbing is decided only once they plateau
    verdicts = [(label, 'pending' if c['status'] == 'passes' and p['status'] != 'yes'
                 else c['status']) for label, c, p in settings]
    words = {'passes': 'passes', 'fails': 'fails', 'pending': 'not decided yet'}
    usable = [label for label, status in verdicts if status == 'passes']
    if usable:
        meaning = (f"Norms are ranked by this project's runs only where the control passed "
                   f"({'; '.join(usable)}); elsewhere the advice rests on the papers' published "
                   'COCO results.')
    else:
        why = ('None has passed yet' if any(s == 'pending' for _, s in verdicts) else
               "No setting reproduces BN's small-batch failure")
        meaning = (f"{why}, so this project's runs rank no norm: the advice rests on the "
                   "papers' published COCO results.")
    summary = '; '.join(f'{label}: {words[status]}' for label, status in verdicts)
    return ('Positive control of the CPU proxy (it passes where BN at 1 image per batch scores '
            'below BN at 8 and loses more than GN does, on paired seeds, with the references '
            f'plateaued): {summary}. {meaning}')


def plot_curves(records: Sequence[Dict], arms: Sequence[str], path: str, title: str = '',
                metric: str = 'coco/bbox_mAP', step_name: str = 'epoch') -> None:
    """Learning curves: per arm the mean over seeds at each evaluation with a 95 % t band,
    thin lines for the single seeds; y from 0 so that gaps look as large as they are."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy import stats
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = 0.0
    for i, arm in enumerate(arms):
        c = curves(records, arm, metric)
        if not c['steps']:
            continue
        color = f'C{i}'
        values = np.array([c['values'][s] for s in c['seeds']]) * 100
        for row in values:
            ax.plot(c['steps'], row, color=color, alpha=0.25, linewidth=0.8)
        mean = values.mean(axis=0)
        if len(values) > 1:
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(axis=0, ddof=1) / \
                math.sqrt(len(values))
            ax.fill_between(c['steps'], mean - half, mean + half, color=color, alpha=0.2)
        ax.plot(c['steps'], mean, color=color, marker='o', linewidth=2,
                label=f"{arm} (n={len(values)})")
        top = max(top, float(values.max()))
    ax.set_ylim(0, max(10.0, top * 1.1))
    ax.set_xlabel(step_name)
    ax.set_ylabel(f'{metric} × 100 (mean over seeds, 95 % CI)')
    if title:
        ax.set_title(textwrap.fill(title, 70))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
