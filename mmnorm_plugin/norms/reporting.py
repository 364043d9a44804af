"""Warnings the norms report once per process (through mmengine's logger and ``warnings``)."""
import warnings

__all__ = ['warn_once']

_warned = set()


def warn_once(key: str, message: str) -> None:
    """Warn through mmengine's logger (and ``warnings``) once per ``key`` per process.

    Callers put into ``key`` what the warning is about *and the values that differ* (e.g. both
    window sizes of a checkpoint mismatch), so each distinct case is reported once, however
    many layers share it, and a different case of the same kind is reported again.
    """
    if key in _warned:
        return
    _warned.add(key)
    try:
        from mmengine.logging import print_log
        import logging
        print_log(message, logger='current', level=logging.WARNING)
    except ImportError:  # pragma: no cover - mmengine is a hard dependency
        pass
    warnings.warn(message, stacklevel=3)
