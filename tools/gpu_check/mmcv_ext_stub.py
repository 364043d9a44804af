"""A stand-in for ``mmcv._ext`` when mmcv was built without its compiled ops.

A GPU machine without the OpenMMLab stack gets mmcv 2.1.0 as a pure-Python wheel
(``MMCV_WITH_OPS=0``, which names itself mmcv-lite, ``make gpu-wheels``): compiling mmcv's
CUDA ops there would take long. But importing
``mmdet.models`` (hence ``mmnorm_plugin``, whose backbones and heads subclass mmdet's) imports
``mmcv.ops``, whose modules call ``mmcv.utils.ext_loader.load_ext('_ext', [names])`` at import:
``importlib.import_module('mmcv._ext')`` and ``hasattr`` for each name. This module puts a
module in ``sys.modules['mmcv._ext']`` whose every attribute is a function raising
``RuntimeError``: imports work, and any code path that really calls a compiled op (RoIAlign,
NMS, deformable conv: none of the norms, ResNet or FPN) fails loudly, never silently.

Used only by ``tools/gpu_check/gpu_check.py`` (never by the package): with an mmcv that has its
ops (this project's CPU stack) :func:`ensure_mmcv_ext` changes nothing.
"""
import importlib
import sys
import types

__all__ = ['MissingOps', 'ensure_mmcv_ext']


class MissingOps(types.ModuleType):
    """``mmcv._ext`` without ops: attributes are functions that raise when called."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(
                f'mmcv._ext.{name}: mmcv was built without its compiled ops (MMCV_WITH_OPS=0) '
                'and tools/gpu_check stands in for mmcv._ext; this code path needs an mmcv '
                'with ops')

        missing.__name__ = name
        return missing


def ensure_mmcv_ext(force: bool = False) -> str:
    """Make ``import mmcv.ops`` work. Returns what ``mmcv._ext`` is now: ``'compiled'`` (the
    real extension, left alone), ``'stub (...)'`` (the stand-in, with why) or
    ``'missing mmcv (...)'`` when mmcv itself does not import (nothing done).
    ``force=True`` installs the stand-in even over compiled ops (tests)."""
    current = sys.modules.get('mmcv._ext')
    if isinstance(current, MissingOps):
        return 'stub (already installed)'
    try:
        import mmcv
    except Exception as exc:  # noqa: BLE001
        return f'missing mmcv ({type(exc).__name__}: {exc})'
    reason = 'forced'
    if not force:
        try:
            importlib.import_module('mmcv._ext')
            return 'compiled'
        except ImportError as exc:  # not built (mmcv-lite) or built for another torch
            reason = f'{type(exc).__name__}: {str(exc)[:120]}'
    stub = MissingOps('mmcv._ext', __doc__)
    sys.modules['mmcv._ext'] = stub
    mmcv._ext = stub
    return f'stub ({reason})'
