"""Norm layers, one module per method, registered in mmengine's root ``MODELS``.

Every norm derives from :class:`~.base.NormBase` (state loading, running statistics, eval
statistics); ``cbn.py``, ``mabn.py``, ``bgn.py`` and ``bkn.py`` hold each method's equations
(CBN's window in ``cbn_window.py``, BKN's prior in ``bkn_prior.py``); the other modules are
the mechanics they share, one concern each. What a user calls besides the layers:
:func:`tap_convolutions` (before ``torch.compile``) and :func:`end_iteration` (a loop that
updates weights without a ``torch.optim`` optimizer).
"""
from . import bgn, bkn, cbn, mabn  # noqa: F401  (registers the layers)
from .conv_origin import tap_convolutions
from .iteration_clock import end_iteration

__all__ = ['tap_convolutions', 'end_iteration']
