"""Old-format mmengine Runner checkpoints, rebuilt from validated data instead of trusted code.

mmengine 0.10.7 pickles its ``MessageHub`` into every checkpoint: ``HistoryBuffer`` objects
(``NEWOBJ`` + ``BUILD`` of their ``__dict__``) holding numpy arrays (numpy's ``_reconstruct`` +
``BUILD``), numpy scalars and dtypes, and each buffer's statistics methods as
``getattr(HistoryBuffer, 'mean')``. Allow-listing those globals for torch's weights-only
unpickler hands a file the callables themselves: a pickle can ``NEWOBJ`` a ``HistoryBuffer``,
``BUILD`` an ``__array_interface__`` with any address onto it, and make numpy read process
memory (or die of SIGSEGV) by passing it to ``HistoryBuffer([that], [0], 10)``.

So no numpy or mmengine callable is ever bound. Inside our loads
(:func:`~mmnorm_plugin.checkpoint.loading.mmengine_checkpoint_loading`) the names such a pickle
uses are bound to the stand-ins of this module (:func:`legacy_globals`):

==============================================  ==============================================
name in the pickle                              bound to
==============================================  ==============================================
``numpy.ndarray``                               :class:`_NDArrayName`: a marker, never built
``numpy[._]core.multiarray._reconstruct``       :class:`_ArrayRecipe`: its ``BUILD`` checks
                                                version, shape, dtype, order and byte count,
                                                then copies the bytes into a fresh array
``numpy.dtype``                                 :class:`_DTypeRecipe`: numeric kinds only
``numpy[._]core.multiarray.scalar``             :func:`_scalar`: a numeric scalar from bytes
``mmengine...HistoryBuffer``                    :class:`_HistoryBufferRecipe`: ``NEWOBJ`` without
                                                arguments, then a ``BUILD`` whose state is
                                                checked and handed to
                                                :func:`rebuild_history_buffer`
``builtins.getattr``                            :func:`_statistic_name`: the *name* of a
                                                registered statistics method, never an attribute
==============================================  ==============================================

Each refusal is a ``pickle.UnpicklingError`` whose message says what was refused. After the
load, :func:`materialize` replaces the recipes by the arrays/dtypes they built and checks the
whole tree: only containers, numbers, strings, plain tensors (no meta device, no hooks or
attributes, no storage overlap beyond 64 MiB), numeric numpy values and rebuilt
``HistoryBuffer``\\ s; no reference cycle, at most :data:`MAX_DEPTH` levels and
:data:`MAX_NODES` objects when expanded as a tree (what recursive consumers walk).
"""
import math
import pickle
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ['legacy_globals', 'materialize', 'rebuild_history_buffer', 'numeric_array',
           'MAX_DEPTH', 'MAX_NODES', 'NUMERIC_DTYPES']

#: numpy dtype kinds a checkpoint may hold (what ``np.dtype(...).__reduce__`` names them)
NUMERIC_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8',
                  'c8', 'c16')
_BYTE_ORDERS = ('<', '>', '|', '=')
MAX_DEPTH = 64
MAX_NODES = 2_000_000
_MAX_NDIM = 32
_MAX_HISTORY = 10 ** 8  # HistoryBuffer.max_length
# a tensor may address more bytes than its storage holds (expand, stride 0) up to this much:
# hashing or copying it materializes that many bytes
_MAX_OVERLAP_BYTES = 64 << 20


def _refuse(message: str):
    raise pickle.UnpicklingError(message)


def _is_int(value) -> bool:
    return type(value) is int


# ----------------------------------------------------------------------------------- numpy
class _NDArrayName:
    """What ``numpy.ndarray`` names in our loads: an argument of ``_reconstruct`` only."""

    def __new__(cls, *args, **kwargs):
        _refuse('refused numpy.ndarray(...): arrays are rebuilt from their pickled bytes only')


class _DTypeRecipe:
    """``numpy.dtype(spec, align, copy)`` for a numeric ``spec``; ``BUILD`` sets its byte order."""

    def __new__(cls, spec=None, align=False, copy=True, *rest):
        if rest or type(spec) is not str or spec not in NUMERIC_DTYPES or align is not False \
                or copy is not True:
            _refuse(f'refused numpy.dtype({spec!r:.40}, ...): only numeric dtypes '
                    f'({", ".join(NUMERIC_DTYPES)}) may be rebuilt')
        self = object.__new__(cls)
        self.dtype = np.dtype(spec)
        self._built = False
        return self

    def __init__(self, *args, **kwargs):  # __new__ validated everything
        pass

    def __setstate__(self, state) -> None:
        if self._built:
            _refuse('refused a second BUILD of a numpy dtype')
        if not (type(state) is tuple and len(state) == 8 and state[0] == 3 and _is_int(state[0])
                and state[1] in _BYTE_ORDERS and state[2:5] == (None, None, None)
                and state[5:] == (-1, -1, 0) and all(_is_int(v) for v in state[5:])):
            _refuse(f'refused numpy dtype state {state!r:.80}: not the state of a numeric dtype')
        self._built = True
        if state[1] in '<>' and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArrayRecipe:
    """``_reconstruct(ndarray, (0,), b'b')``; ``BUILD`` with numpy's array state builds a copy."""

    def __new__(cls, subtype=None, shape=None, code=None, *rest):
        if rest or subtype is not _NDArrayName or shape != (0,) or type(shape) is not tuple \
                or code != b'b' or type(code) is not bytes:
            _refuse('refused numpy _reconstruct(...) with arguments numpy never pickles')
        self = object.__new__(cls)
        self.array: Optional[np.ndarray] = None
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        if self.array is not None:
            _refuse('refused a second BUILD of a numpy array')
        if not (type(state) is tuple and len(state) == 5):
            _refuse(f'refused numpy array state of type {type(state).__name__}: not a 5-tuple')
        version, shape, dtype, fortran, raw = state
        if not (_is_int(version) and version == 1):
            _refuse(f'refused numpy array state version {version!r:.20}')
        if not (type(shape) is tuple and len(shape) <= _MAX_NDIM
                and all(_is_int(n) and n >= 0 for n in shape)):
            _refuse(f'refused numpy array shape {shape!r:.60}')
        if type(dtype) is not _DTypeRecipe:
            _refuse(f'refused numpy array of dtype {type(dtype).__name__}: numeric dtypes only')
        if type(fortran) is not bool:
            _refuse(f'refused numpy array order flag {fortran!r:.20}')
        if type(raw) not in (bytes, bytearray):
            _refuse(f'refused numpy array data of type {type(raw).__name__}: bytes only')
        dt = dtype.dtype
        if math.prod(shape) * dt.itemsize != len(raw):
            _refuse(f'refused numpy array: shape {shape} of {dt} needs '
                    f'{math.prod(shape) * dt.itemsize} bytes, the file has {len(raw)}')
        flat = np.frombuffer(bytes(raw), dtype=dt)
        self.array = np.array(flat.reshape(shape, order='F' if fortran else 'C'), copy=True)


def _scalar(dtype=None, raw=None, *rest):
    """``numpy...multiarray.scalar(dtype, bytes)`` for a numeric dtype."""
    if rest or type(dtype) is not _DTypeRecipe or type(raw) not in (bytes, bytearray) \
            or len(raw) != dtype.dtype.itemsize:
        _refuse('refused numpy scalar(...): a numeric dtype and its bytes only')
    return np.frombuffer(bytes(raw), dtype=dtype.dtype)[0].copy()


# -------------------------------------------------------------------------------- mmengine
class _StatisticName(str):
    """The name of a registered ``HistoryBuffer`` statistics method (what ``getattr`` gave)."""


_STATISTICS = ('min', 'max', 'current', 'mean')


def _registered_statistics() -> Tuple[str, ...]:
    from mmengine.logging.history_buffer import HistoryBuffer
    return tuple(sorted(set(_STATISTICS) | set(HistoryBuffer._statistics_methods)))


def _statistic_name(owner=None, name=None, *rest):
    """Stands in for ``builtins.getattr``: only ``getattr(HistoryBuffer, <registered statistics
    method>)``, and it returns the name, which the rebuilt buffer ignores (its class already
    has the method); nothing else is looked up."""
    if not rest and owner is _HistoryBufferRecipe and type(name) is str \
            and name in _registered_statistics():
        return _StatisticName(name)
    _refuse(f'refused getattr({getattr(owner, "__name__", type(owner).__name__)!s:.40}, '
            f'{name!r:.40}): a checkpoint may only name HistoryBuffer statistics methods')


def numeric_array(value, what: str, ndim: Optional[int] = None) -> np.ndarray:
    """A fresh numpy copy of ``value`` (ndarray or tensor) of a numeric dtype; refuses others."""
    if isinstance(value, torch.Tensor):
        _check_tensor(value, what)
        if value.is_quantized or value.dtype.is_complex or value.dtype not in _TENSOR_NUMERIC:
            _refuse(f'refused {what}: a {value.dtype} tensor, numeric tensors only')
        value = value.detach().cpu().numpy()
    if type(value) is not np.ndarray or value.dtype.str[1:] not in NUMERIC_DTYPES:
        _refuse(f'refused {what}: {type(value).__name__} of '
                f'{getattr(value, "dtype", "-")}, numeric arrays only')
    if ndim is not None and value.ndim != ndim:
        _refuse(f'refused {what}: {value.ndim}-d, {ndim}-d expected')
    return np.array(value, copy=True)


_TENSOR_NUMERIC = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                   torch.float16, torch.float32, torch.float64)


def rebuild_history_buffer(log, count, max_length, what: str = 'HistoryBuffer'):
    """A new ``HistoryBuffer`` from validated data: ``log``/``count`` 1-d numeric arrays (or
    tensors) of one length, at most ``max_length`` (an int in 1..1e8)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if not (_is_int(max_length) and 1 <= max_length <= _MAX_HISTORY):
        _refuse(f'refused {what}: max_length {max_length!r:.20} is not an int in 1..{_MAX_HISTORY}')
    log = numeric_array(log, f'{what} log', ndim=1)
    count = numeric_array(count, f'{what} counts', ndim=1)
    if len(log) != len(count) or len(log) > max_length:
        _refuse(f'refused {what}: {len(log)} values, {len(count)} counts, '
                f'max_length {max_length}')
    return HistoryBuffer(log, count, max_length)


_BUFFER_KEYS = {'max_length', '_log_history', '_count_history'}


class _HistoryBufferRecipe:
    """What ``mmengine.logging.history_buffer.HistoryBuffer`` names in our loads.

    ``NEWOBJ`` without arguments gives an empty recipe; its ``BUILD`` state must be exactly a
    buffer's (``max_length``, ``_log_history``, ``_count_history``, optionally
    ``statistics_methods`` naming registered methods); the object then becomes the
    ``HistoryBuffer`` :func:`rebuild_history_buffer` makes of it. A call with arguments
    (``REDUCE``) is refused: mmengine never pickles one.
    """

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            _refuse('refused HistoryBuffer(...) with arguments: buffers are rebuilt from their '
                    'pickled state only')
        return object.__new__(cls)

    def __setstate__(self, state) -> None:
        if type(state) is not dict or not (
                _BUFFER_KEYS <= set(state) <= _BUFFER_KEYS | {'statistics_methods'}):
            keys = sorted(map(str, state)) if type(state) is dict else type(state).__name__
            _refuse(f'refused HistoryBuffer state {keys!s:.120}: only max_length, '
                    '_log_history, _count_history and statistics_methods')
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or not all(
                type(k) is str and type(v) is _StatisticName and v == k
                for k, v in methods.items()):
            _refuse('refused HistoryBuffer statistics_methods: names of registered methods only')
        arrays = [_unwrap_array(state[k], f'HistoryBuffer {k}')
                  for k in ('_log_history', '_count_history')]
        buffer = rebuild_history_buffer(*arrays, state['max_length'])
        # become that buffer: the tree then holds a plain HistoryBuffer, nothing of ours
        self.__class__ = type(buffer)
        self.__dict__.clear()
        self.__dict__.update(vars(buffer))


def _unwrap_array(value, what: str) -> np.ndarray:
    if type(value) is _ArrayRecipe and value.array is not None:
        return value.array
    _refuse(f'refused {what}: {type(value).__name__}, a pickled numpy array expected')


def legacy_globals() -> List[Tuple[Any, str]]:
    """``(stand-in, name)`` pairs for torch's allow-list (see the module docstring)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    pairs = [(_NDArrayName, 'numpy.ndarray'), (_DTypeRecipe, 'numpy.dtype'),
             (_statistic_name, 'builtins.getattr'),
             (_HistoryBufferRecipe, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
             (_HistoryBufferRecipe, 'mmengine.logging.HistoryBuffer')]
    for core in ('numpy.core.multiarray', 'numpy._core.multiarray'):  # numpy 1.x, 2.x
        pairs += [(_ArrayRecipe, f'{core}._reconstruct'), (_scalar, f'{core}.scalar')]
    return pairs


# ---------------------------------------------------------------------------- materialize
_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype,
           torch.device, torch.layout, torch.memory_format, torch.qscheme)
_KEY_TYPES = (type(None), bool, int, float, complex, str, bytes)


def _check_tensor(t: torch.Tensor, where: str) -> None:
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        _refuse(f'refused {where}: a tensor subclass {type(t).__name__}')
    if t.layout != torch.strided or t.is_nested:
        _refuse(f'refused {where}: a {t.layout} tensor, dense (strided) tensors only')
    if t.device.type == 'meta':
        _refuse(f'refused {where}: a tensor on the meta device (it holds no values)')
    if t.__dict__ or (getattr(t, '_backward_hooks', None) or None) is not None:
        _refuse(f'refused {where}: a tensor with Python attributes or backward hooks')
    if t.numel():
        nbytes = t.untyped_storage().nbytes()
        if t.numel() * t.element_size() > max(nbytes, _MAX_OVERLAP_BYTES):
            _refuse(f'refused {where}: a {tuple(t.shape)} tensor over a {nbytes}-byte storage '
                    '(overlapping strides)')


def materialize(obj, where: str = 'checkpoint'):
    """``obj`` with every recipe replaced by what it built, after checking the whole tree.

    Containers are edited in place (tuples rebuilt when a child changed). Refusals raise
    ``pickle.UnpicklingError`` naming the entry (``checkpoint['meta']['x']``).
    """
    # id -> (the object, kept alive so that its id is not reused; result; size of its tree)
    done: Dict[int, Tuple[Any, Any, int]] = {}
    on_path = set()
    total = [0]

    def visit(value, path: str, depth: int):
        if depth > MAX_DEPTH:
            _refuse(f'refused {path}: nested deeper than {MAX_DEPTH} levels')
        key = id(value)
        if key in done:
            _, result, size = done[key]
            total[0] += size
            if total[0] > MAX_NODES:
                _refuse(f'refused {where}: more than {MAX_NODES} objects when expanded')
            return result
        if key in on_path:
            _refuse(f'refused {path}: a container that contains itself')
        before = total[0]
        total[0] += 1
        if total[0] > MAX_NODES:
            _refuse(f'refused {where}: more than {MAX_NODES} objects when expanded')
        on_path.add(key)
        try:
            result = convert(value, path, depth)
        finally:
            on_path.discard(key)
        done[key] = (value, result, total[0] - before)
        return result

    def convert(value, path, depth):
        kind = type(value)
        if kind in _LEAVES:
            return value
        if isinstance(value, (np.dtype, np.ndarray, np.generic)):
            # arrays and dtypes come from our recipes; a tree that is materialized again (or
            # converted by WeightsOnlyCheckpointHook) holds them as they are
            dtype = value if isinstance(value, np.dtype) else value.dtype
            if isinstance(value, np.ndarray) and kind is not np.ndarray \
                    or dtype.str[1:] not in NUMERIC_DTYPES:
                _refuse(f'refused {path}: numpy {type(value).__name__} of {dtype}')
            return value
        if kind is _DTypeRecipe:
            return value.dtype
        if kind is _ArrayRecipe:
            return _unwrap_array(value, path)
        if kind in (torch.Tensor, torch.nn.Parameter) or isinstance(value, torch.Tensor):
            _check_tensor(value, path)
            return value
        if kind is torch.Size:
            if not all(_is_int(n) for n in value):
                _refuse(f'refused {path}: torch.Size of non-integers')
            return value
        if _is_history_buffer(value):
            return value  # only our recipe can have made one, after its checks
        if kind in (list,):
            for i, item in enumerate(value):
                new = visit(item, f'{path}[{i}]', depth + 1)
                if new is not item:
                    value[i] = new
            return value
        if kind is tuple:
            items = [visit(item, f'{path}[{i}]', depth + 1) for i, item in enumerate(value)]
            return value if all(a is b for a, b in zip(items, value)) else tuple(items)
        if kind in (set, frozenset):
            for item in value:
                if type(item) not in _KEY_TYPES:
                    _refuse(f'refused {path}: a set holding {type(item).__name__}')
            return value
        if isinstance(value, dict) and kind in _DICT_TYPES:
            extra = set(getattr(value, '__dict__', {})) - {'_metadata'}
            if extra:
                _refuse(f'refused {path}: a {kind.__name__} with attributes '
                        f'{sorted(map(str, extra))!s:.80}')
            if '_metadata' in getattr(value, '__dict__', {}):
                value._metadata = visit(value._metadata, f'{path}._metadata', depth + 1)
            for k, item in list(value.items()):
                if type(k) not in _KEY_TYPES and not (type(k) is tuple and all(
                        type(p) in _KEY_TYPES for p in k)):
                    _refuse(f'refused {path}: a dict key of type {type(k).__name__}')
                new = visit(item, f'{path}[{k!r:.40}]', depth + 1)
                if new is not item:
                    value[k] = new
            return value
        if kind is _HistoryBufferRecipe:
            _refuse(f'refused {path}: a HistoryBuffer that was never built from its state')
        if kind is _StatisticName:
            return str(value)
        _refuse(f'refused {path}: an object of type {kind.__module__}.{kind.__qualname__}')

    return visit(obj, where, 0)


def _is_history_buffer(value) -> bool:
    from mmengine.logging.history_buffer import HistoryBuffer
    if type(value) is not HistoryBuffer:
        return False
    if set(vars(value)) != _BUFFER_KEYS:  # a rebuilt buffer has exactly these
        _refuse('refused a HistoryBuffer with other attributes')
    return True


def _dict_types():
    import collections
    return (dict, collections.OrderedDict, collections.Counter)


_DICT_TYPES = _dict_types()
