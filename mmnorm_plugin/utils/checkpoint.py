"""Moved to :mod:`mmnorm_plugin.checkpoint.loading`; this path keeps old imports working (deprecated)."""
import warnings

from ..checkpoint.loading import *  # noqa: F401,F403
from ..checkpoint.loading import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.checkpoint moved to mmnorm_plugin.checkpoint.loading', DeprecationWarning,
              stacklevel=2)
