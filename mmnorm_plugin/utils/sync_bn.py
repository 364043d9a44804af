"""Moved to :mod:`mmnorm_plugin.distributed.sync_bn`; this path keeps old imports working (deprecated)."""
import warnings

from ..distributed.sync_bn import *  # noqa: F401,F403
from ..distributed.sync_bn import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.sync_bn moved to mmnorm_plugin.distributed.sync_bn', DeprecationWarning,
              stacklevel=2)
