"""Norm layers, one module per method, registered in mmengine's root ``MODELS``."""
from . import bgn, bkn, cbn, mabn  # noqa: F401
