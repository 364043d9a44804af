"""Paired-seed statistics for comparing norms (the project's evidence protocol).

Arm A and arm B run with the same seed share initialization and data order, so the unit of
comparison is the per-seed difference ``d_i = A_i - B_i``. :func:`paired_difference` gives its
mean, the t interval ``mean ± t(0.975, n-1) · sd(d) / sqrt(n)`` (the protocol's primary
interval), a percentile bootstrap interval over seeds shown beside it, and the paired t-test's
p-value; :func:`holm` adjusts a family of p-values (Holm–Bonferroni) for claims that several
arms each beat one baseline.
"""
import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

__all__ = ['MIN_CLAIM_SEEDS', 'summarize', 'paired_difference', 'holm', 'claim_mark',
           'format_mean_std', 'format_interval']


def summarize(values: Sequence[float]) -> Dict:
    """``n``, ``mean`` and sample ``std`` (ddof=1; None for n < 2)."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        return dict(n=0, mean=None, std=None)
    return dict(n=int(x.size), mean=float(x.mean()),
                std=float(x.std(ddof=1)) if x.size > 1 else None)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95,
                      n_boot: int = 10000, boot_seed: int = 0) -> Dict:
    """Statistics of ``a[s] - b[s]`` over the seeds ``s`` both arms have.

    Returns ``n``, ``seeds``, ``mean``, ``sd``, ``ci`` (t interval; None for n < 2),
    ``boot_ci`` (percentile bootstrap over seeds with a fixed resampling seed; None for n < 2),
    ``p`` (two-sided paired t-test; None for n < 2 or sd = 0) and ``excludes_zero``.
    """
    from scipy import stats
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    out = dict(n=len(seeds), seeds=seeds, mean=None, sd=None, ci=None, boot_ci=None, p=None,
               excludes_zero=False)
    if d.size == 0:
        return out
    out['mean'] = float(d.mean())
    if d.size < 2:
        return out
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * sd / math.sqrt(d.size)
    out.update(sd=sd, ci=(out['mean'] - half, out['mean'] + half))
    rng = np.random.default_rng(boot_seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    out['boot_ci'] = (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))
    if sd > 0:
        out['p'] = float(2 * stats.t.sf(abs(out['mean']) / (sd / math.sqrt(d.size)),
                                        d.size - 1))
    else:  # identical differences: no spread, the sign is certain only if nonzero
        out['p'] = 0.0 if out['mean'] != 0 else 1.0
    out['excludes_zero'] = out['ci'][0] > 0 or out['ci'][1] < 0
    return out


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> Dict[str, Dict]:
    """Holm–Bonferroni over a family: ``{name: dict(p, p_adj, reject)}``."""
    items = sorted(((p, k) for k, p in p_values.items() if p is not None))
    m, out, running = len(items), {}, 0.0
    for rank, (p, key) in enumerate(items):
        running = max(running, min(1.0, (m - rank) * p))
        out[key] = dict(p=p, p_adj=running, reject=running < alpha)
    return out


def format_mean_std(stats: Dict, scale: float = 100, digits: int = 1) -> str:
    """``41.2 ± 1.3 (n=5)``; a single value reads ``41.2 (n=1)``, never ``± 0.0``."""
    if not stats['n']:
        return '–'
    mean = f"{stats['mean'] * scale:.{digits}f}"
    if stats['n'] < 2:
        return f'{mean} (n=1)'
    return f"{mean} ± {stats['std'] * scale:.{digits}f} (n={stats['n']})"


#: the protocol's least number of paired seeds behind any claim (fewer is a pilot)
MIN_CLAIM_SEEDS = 5


def claim_mark(diff: Dict, p_adjusted: Optional[float] = None,
               margin: Optional[float] = None, alpha: float = 0.05,
               min_n: int = MIN_CLAIM_SEEDS) -> str:
    """The claim a paired difference supports, as a table mark: ``' *'`` where it differs from
    0 (its family's Holm-adjusted p-value below ``alpha`` when given, else its own interval
    excluding 0), ``' ≈'`` where its whole interval lies within ``±margin`` (an equivalence:
    "they tie" needs this, not merely "not significant"), ``''`` where it supports neither
    or rests on fewer than ``min_n`` pairs (a pilot claims nothing)."""
    if diff.get('ci') is None or diff['n'] < min_n:
        return ''
    differs = p_adjusted < alpha if p_adjusted is not None else diff['excludes_zero']
    if differs:
        return ' *'
    if margin is not None and -margin <= diff['ci'][0] and diff['ci'][1] <= margin:
        return ' ≈'
    return ''


def format_interval(diff: Dict, scale: float = 100, digits: int = 1,
                    mark: Optional[str] = None) -> str:
    """``+3.1 [+1.2, +5.0]`` (t interval), ``+3.1 (n=1)`` without one; followed by ``mark``
    (default: :func:`claim_mark` of the interval alone)."""
    if diff['mean'] is None:
        return '–'
    mean = f"{diff['mean'] * scale:+.{digits}f}"
    if diff['ci'] is None:
        return f"{mean} (n={diff['n']})"
    lo, hi = (v * scale for v in diff['ci'])
    mark = claim_mark(diff) if mark is None else mark
    return f'{mean} [{lo:+.{digits}f}, {hi:+.{digits}f}]{mark}'
