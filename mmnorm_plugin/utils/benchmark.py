"""Moved to :mod:`mmnorm_plugin.benchmarks.layer_benchmark`; this path keeps old imports working (deprecated)."""
import warnings

from ..benchmarks.layer_benchmark import *  # noqa: F401,F403
from ..benchmarks.layer_benchmark import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.benchmark moved to mmnorm_plugin.benchmarks.layer_benchmark', DeprecationWarning,
              stacklevel=2)
