"""``norm_sweep``: A/B the plugin's norms on any mmdet config, with paired seeds and intervals.

A sweep is a grid of *arms*: a norm (where it goes: backbone / neck / heads) at a number of
images per batch, each trained once per seed. Every arm-seed is a separate process pair, the
project's ``tools/train.py`` then ``tools/test.py``, on a config derived from the user's: only
the norm and the batch (with the LR scaled linearly) change, and seed ``s`` gives every arm the
same initialization and data order (mmengine's ``randomness.seed`` seeds the weights and the
sampler), so arms are compared seed by seed.

One concern a module:

* :mod:`.arms`: the norm presets, where a config's norms are, the config of one arm-seed.
* :mod:`.runner`: running arm-seeds (resumable; provenance taken at the start; optional
  learning curve), one JSON record each under ``<out>/records/``.
* :mod:`.records`: reading, validating, importing and merging records.
* :mod:`.report`: per arm n, mean and sample std, paired differences against a baseline at the
  same images per batch and against a reference arm with the 95 % t interval and Holm-adjusted
  marks; the Markdown table, JSON and figure.
* :mod:`.control`: whether a proxy can see BN's small-batch failure at all (the positive
  control) and whether its references have plateaued (learning curves), before any ranking.
* :mod:`.cost`: what each run cost on the machine that ran it, from the mmengine logs of all
  its training sessions (a record's ``train_seconds`` times only the last one).
"""
from ..provenance import provenance  # noqa: F401 (records' provenance, importable here)
from .arms import NORM_PRESETS, PARTS, Arm, arm_config, norm_sites, parse_norm
from .records import RecordError, check_record, import_records, load_records, merge_records
from .report import (analyze, format_report, parse_versus, plot_sweep, plot_versus,
                     write_report)
from .runner import ensure_dataset, run_arm, run_sweep

__all__ = ['NORM_PRESETS', 'PARTS', 'Arm', 'parse_norm', 'arm_config', 'norm_sites',
           'run_sweep', 'run_arm', 'load_records', 'analyze', 'format_report', 'plot_sweep',
           'plot_versus', 'write_report', 'merge_records', 'parse_versus', 'ensure_dataset',
           'import_records', 'RecordError', 'check_record']
