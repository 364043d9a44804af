"""The small-batch detection study (configs/small_batch): collect each arm's COCO metrics from the
work directory ``tools/run_demo.sh`` wrote, tabulate them and plot them as bars.

Each arm is ``name=work_dir`` where ``work_dir`` is run_demo.sh's ``WORK_DIR``: the training run
under ``work_dir/train/<timestamp>/`` and the ``tools/test.py`` run under
``work_dir/test/<timestamp>/<timestamp>.json`` (its last line holds the metrics). The wall time
is from the training run's start (its timestamp folder name) to the test's metrics file: train +
test, without install and dataset generation. Arms collected from work dirs carry the commit and
the command line of the collection (:func:`parse_arms`); arms saved before records carried them
have neither, and are read and drawn the same.
"""
import copy
import datetime
import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from .provenance import provenance

__all__ = ['read_arm', 'parse_arms', 'arm_label', 'compare_with_study', 'format_table',
           'plot_study']

_STAMP = '%Y%m%d_%H%M%S'


def _timestamp(path: str) -> Optional[float]:
    try:
        return datetime.datetime.strptime(osp.basename(path), _STAMP).timestamp()
    except ValueError:
        return None


def read_arm(name: str, work_dir: str) -> Dict:
    """Metrics of one arm: ``name``, ``config`` (file name of the config the training dumped
    into ``work_dir/train``, None if absent), ``norm_cfg_options`` (``{}``: the config as it
    is; the study's JSON records the options of arms run with ``--cfg-options``), ``mAP``,
    ``AP50``, ``AP75``, ``seconds`` (None if unknown).

    Raises ``FileNotFoundError`` naming ``work_dir`` when no test result is there.
    """
    results = sorted(glob.glob(osp.join(work_dir, 'test', '*', '*.json')))
    if not results:
        raise FileNotFoundError(f'no tools/test.py result under {work_dir}/test/*/')
    with open(results[-1]) as f:
        metrics = json.loads(f.read().splitlines()[-1])
    starts = [t for t in map(_timestamp, glob.glob(osp.join(work_dir, 'train', '*')))
              if t is not None]
    seconds = round(os.path.getmtime(results[-1]) - max(starts)) if starts else None
    configs = glob.glob(osp.join(work_dir, 'train', '*.py'))
    return dict(name=name, config=osp.basename(configs[0]) if configs else None,
                norm_cfg_options={}, mAP=metrics['coco/bbox_mAP'],
                AP50=metrics['coco/bbox_mAP_50'], AP75=metrics['coco/bbox_mAP_75'],
                seconds=seconds)


def arm_label(arm: Dict) -> str:
    """An arm as a reader can rerun it: its config and the ``norm_cfg`` options it was run with
    on top of the config (``norm_cfg_options``, set in every norm_cfg of the model; several
    arms of the study share a config and differ only there)."""
    label = arm.get('config') or arm['name']
    options = arm.get('norm_cfg_options')
    if options:
        label += ' + norm_cfg ' + ', '.join(f'{k}={v!r}' for k, v in options.items())
    return label


def compare_with_study(config: str, mAP: float, study: Sequence[Dict]) -> str:
    """``run_demo.sh``'s summary: this run's bbox mAP above the study's arms of the same config
    and its BN arms, each named by :func:`arm_label`."""
    rows = [a for a in study
            if a['config'] == osp.basename(config) or a['name'].startswith('BN-')]
    lines = [f'  {mAP:.3f}  this run ({osp.basename(config)})']
    lines += [f"  {a['mAP']:.3f}  {arm_label(a)}" for a in rows]
    return '\n'.join(lines)


def format_table(arms: Sequence[Dict]) -> str:
    """A markdown table, one row per arm, in the given order."""
    lines = ['| arm | bbox mAP | AP50 | AP75 | train + test wall time |', '|---|---|---|---|---|']
    for arm in arms:
        sec = arm.get('seconds')
        wall = '–' if sec is None else f'{int(sec) // 60} min {int(sec) % 60:02d} s'
        lines.append(f"| {arm['name']} | {arm['mAP']:.3f} | {arm['AP50']:.3f} | "
                     f"{arm['AP75']:.3f} | {wall} |")
    return '\n'.join(lines)


def plot_study(arms: Sequence[Dict], path: str, title: str = '',
               references: Sequence[str] = ()) -> str:
    """Bar chart of bbox mAP (bars) and AP50 (markers) per arm; the arms named in
    ``references`` (e.g. BN at 8 and at 1 image per batch) are grey bars and a line across the
    chart, drawn above the bars (one dash pattern each). A variant of an arm
    (``'CBN-1, official running stats'`` of ``'CBN-1'``, see
    :mod:`~mmnorm_plugin.analysis.plot_style`) is a hatched, lighter bar, so the defaults stand
    out without colour. Returns ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [a['name'] for a in arms]
    by_name = {a['name']: a for a in arms}
    missing = [r for r in references if r not in by_name]
    if missing:
        raise KeyError(f'reference arms {missing} are not among {names}')
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * len(arms) + 1.5), 3.6))
    xs = list(range(len(arms)))
    from matplotlib.patches import Patch

    from .plot_style import arm_styles
    styles = arm_styles(names)
    bars = []
    for x, arm in zip(xs, arms):
        colour = 'tab:gray' if arm['name'] in references else 'tab:blue'
        hatch = styles[arm['name']]['hatch']
        bars += ax.bar(x, arm['mAP'], color=colour, alpha=1.0 if hatch is None else 0.55,
                       hatch=hatch, edgecolor='white' if hatch else colour, zorder=2)
    handles = [Patch(color='tab:blue', label='bbox mAP')]
    if any(not s['default'] for s in styles.values()):
        handles.append(Patch(facecolor='tab:blue', alpha=0.55, hatch='//', edgecolor='white',
                             label='bbox mAP, a variant of the arm before it'))
    if references:
        handles.append(Patch(color='tab:gray', label='bbox mAP, reference arm'))
    ax.plot(xs, [a['AP50'] for a in arms], 'o', color='tab:orange', label='AP50', zorder=4)
    for bar, arm in zip(bars, arms):
        ax.annotate(f"{arm['mAP']:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha='center', va='bottom', fontsize=7)
    for style, ref in zip(('--', ':', '-.'), references):
        ax.axhline(by_name[ref]['mAP'], color='dimgray', linestyle=style, linewidth=1.2,
                   label=f'{ref} mAP', zorder=3)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=30, ha='right', fontsize=8)
    ax.set_ylabel('COCO bbox mAP / AP50')
    ax.set_ylim(0, min(1.0, 1.25 * max(max(a['AP50'], a['mAP']) for a in arms) + 0.02))
    handles += ax.get_legend_handles_labels()[0]
    # one row above the highest marker (the y range leaves 25 % headroom for it)
    ax.legend(handles=handles, fontsize=7, loc='upper left', ncol=len(handles))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def parse_arms(specs: List[str], command: Optional[str] = None) -> List[Dict]:
    """``['BN-8=work_dirs/sb/bn8', ...]`` -> the arms' metrics (see :func:`read_arm`), each
    with the provenance of this collection (commit, dirty flag, versions, and ``command`` when
    given: :func:`~mmnorm_plugin.analysis.provenance.provenance`). The work dirs do not record
    the commit they were trained at; ``make small-batch-study`` trains and collects in one
    checkout, so there the collection's commit is the training's."""
    arms = []
    for spec in specs:
        name, sep, work_dir = spec.partition('=')
        if not sep or not name or not work_dir:
            raise ValueError(f'expected NAME=WORK_DIR, got {spec!r}')
        arms.append(read_arm(name, work_dir))
    origin = provenance(command)
    return [dict(arm, **copy.deepcopy(origin)) for arm in arms]
