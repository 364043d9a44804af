"""The report of a sweep: per arm n, mean and sample std; paired differences against a
baseline at the same images per batch and against a reference arm, with the 95 % t interval
and Holm-adjusted marks; a Markdown table, a JSON and a figure."""
import json
import os
import os.path as osp
import textwrap
from typing import Dict, List, Mapping, Optional, Sequence

from .records import arm_key

__all__ = ['MARGIN', 'parse_versus', 'analyze', 'format_report', 'plot_sweep', 'plot_versus',
           'write_report']

#: the default equivalence margin of a tie, as a fraction of the metric (1 mAP point)
MARGIN = 0.01

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
def analyze(records: Sequence[Dict], baseline: Optional[str] = 'BN',
            reference: Optional[str] = None, metric: str = 'coco/bbox_mAP',
            versus: Optional[Mapping[str, str]] = None, margin: float = MARGIN) -> Dict:
    """Per arm: n, mean, sample std, and the paired differences vs ``baseline`` (a norm, at
    the same images per batch) and vs ``reference`` (an arm such as ``BN@8``), with
    Holm-adjusted p-values over each family of comparisons (the table's rows against one
    baseline, and against the reference). ``versus`` maps a norm to the norm it is compared
    with instead of ``baseline`` (an option's variant to the default it varies). ``margin``
    (a fraction: 0.01 = 1 mAP point) is the equivalence margin of "they tie"."""
    versus = dict(versus or {})
    from ..paired_stats import holm, paired_difference, summarize
    by_arm: Dict[str, Dict[int, float]] = {}
    for rec in records:
        if metric in rec['metrics']:
            by_arm.setdefault(rec['arm'], {})[rec['seed']] = rec['metrics'][metric]
    arms = sorted(by_arm, key=lambda a: (arm_key(a)[1], arm_key(a)[0]))
    rows = []
    for arm in arms:
        norm, batch = arm_key(arm)
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
                margin=margin, rows=rows, commits=commits)


def format_report(analysis: Dict, title: str = '') -> str:
    """Markdown: one table, a row per arm (mAP in points: mean ± sample std (n); paired
    differences with the 95 % t interval, marked ``*`` where the difference survives Holm's
    adjustment over its column and ``≈`` where the interval lies within the margin)."""
    from ..paired_stats import claim_mark, format_interval, format_mean_std
    margin = analysis.get('margin', MARGIN)

    def cell(diff):
        return format_interval(diff, mark=claim_mark(diff, diff.get('p_holm'), margin))

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
            cells.append('–' if diff is None else cell(diff) + (
                f" vs {diff['arm']}" if versus else ''))
        if ref:
            cells.append(cell(row['vs_reference']) if 'vs_reference' in row else '–')
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append('Δ in mAP points: paired over seeds (same seed = same init and data order), '
                 'with the 95 % t interval. `*`: differs from 0 after Holm–Bonferroni over the '
                 f'column; `≈`: the interval lies within ±{margin * 100:g} point (a tie). '
                 'Unmarked: neither can be claimed.')
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
    # an honest frame: the x range padded (one batch size must not put its points on the
    # edges) and y from 0, so that a gap of 0.3 points looks like one
    ticks = [math.log2(b) for b in batches] or [0.0]
    ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
    ax.set_ylim(0, max(10.0, ax.get_ylim()[1]))
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
        # coloured only where an interval exists and excludes 0 (a single seed has none: grey)
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
                 versus: Optional[Mapping[str, str]] = None, margin: float = MARGIN) -> Dict:
    """``<prefix>.md`` (table), ``<prefix>.json`` (records + analysis), ``<prefix>.png`` (mAP
    vs images per batch, or with ``versus`` the forest of paired differences)."""
    analysis = analyze(records, baseline, reference, metric, versus, margin)
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
