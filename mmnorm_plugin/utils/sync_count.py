"""Moved to :mod:`mmnorm_plugin.benchmarks.sync_count`; this path keeps old imports working (deprecated)."""
import warnings

from ..benchmarks.sync_count import *  # noqa: F401,F403
from ..benchmarks.sync_count import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.sync_count moved to mmnorm_plugin.benchmarks.sync_count', DeprecationWarning,
              stacklevel=2)
