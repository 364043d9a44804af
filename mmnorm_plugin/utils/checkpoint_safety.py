"""Moved to :mod:`mmnorm_plugin.checkpoint.safety`; this path keeps old imports working (deprecated)."""
import warnings

from ..checkpoint.safety import *  # noqa: F401,F403
from ..checkpoint.safety import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.checkpoint_safety moved to mmnorm_plugin.checkpoint.safety', DeprecationWarning,
              stacklevel=2)
