"""Moved to :mod:`mmnorm_plugin.benchmarks.detector_benchmark`; this path keeps old imports working (deprecated)."""
import warnings

from ..benchmarks.detector_benchmark import *  # noqa: F401,F403
from ..benchmarks.detector_benchmark import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.detector_benchmark moved to mmnorm_plugin.benchmarks.detector_benchmark', DeprecationWarning,
              stacklevel=2)
