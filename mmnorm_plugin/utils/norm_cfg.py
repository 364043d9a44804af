"""Moved to :mod:`mmnorm_plugin.validation.norm_cfg`; this path keeps old imports working (deprecated)."""
import warnings

from ..validation.norm_cfg import *  # noqa: F401,F403
from ..validation.norm_cfg import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.norm_cfg moved to mmnorm_plugin.validation.norm_cfg', DeprecationWarning,
              stacklevel=2)
