"""Property-based fuzzing of the checkpoint loaders (issue 28), with hypothesis.

Each target generates hostile inputs, feeds them to a loader our tools use, and asserts for every
example:

* no code runs: a marker file that every payload would create (``os.system``, ``open``, a
  module imported through ``custom_imports``, a ``_base_`` file) does not exist;
* only one-line refusals: the loader returns, or raises ``RefusedCheckpoint`` /
  ``DamagedCheckpoint`` (or ``NotLiteral`` for config text) whose message is one line naming
  the file; any other exception fails the target;
* state unchanged: torch's allow-list, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, torch's
  weights-only default, ``HistoryBuffer``'s registered methods, numpy's float64 dtype, the set of
  trusted files and the loading lock are as before;
* no crash below Python: the harness runs as its own process; the caller checks its return code
  (a SIGSEGV is rc -11).

Targets: ``opcode_streams`` (hand-written pickle opcodes around every allow-listed global and
the templates of the old-format objects, mutated), ``containers`` (random nested containers,
code strings in ``meta``, odd tensors, numpy values and HistoryBuffers, saved by torch),
``config_text`` (the literal reader of saved configs), ``weights_only_records``
(``WeightsOnlyCheckpointHook``'s tagged records), ``tampered_bytes`` (byte-level damage to a
checksummed Runner checkpoint: it loads identical and verified, or is refused), ``guarded_loader``
(mmengine's ``CheckpointLoader`` through ``mmnorm-guarded://``: ``meta['config']`` never reaches
the Runner).

    python tests/test_checkpoint/fuzz_checkpoint_loaders.py --examples 300   # CI budget
    make fuzz FUZZ_EXAMPLES=5000                                              # a longer run

Derandomized (fixed seed per target and ``--seed``): the same command tries the same inputs.
Prints one JSON line: per target, the examples tried and their outcomes.
"""
import argparse
import collections
import io
import json
import math
import os
import os.path as osp
import pickle
import struct
import sys
import tempfile
import threading
import time
import warnings

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import hostile_pickles as hp  # noqa: E402
import mmnorm_plugin  # noqa: E402,F401
from mmnorm_plugin.checkpoint import loading  # noqa: E402
from mmnorm_plugin.checkpoint import safety as cs  # noqa: E402
from mmnorm_plugin.checkpoint.config_text import NotLiteral, literal_assignments  # noqa: E402
from mmnorm_plugin.checkpoint.legacy_objects import materialize  # noqa: E402

WORK = tempfile.mkdtemp(prefix='mmnorm-fuzz-', dir='/dev/shm' if osp.isdir('/dev/shm') else None)
MARKER = osp.join(WORK, 'code-ran')
MODULE = 'mmnorm_fuzz_marker'
with open(osp.join(WORK, f'{MODULE}.py'), 'w') as _f:
    _f.write(f'open({MARKER!r}, "w").close()\n')
with open(osp.join(WORK, 'base.py'), 'w') as _f:
    _f.write(f'import os\nos.system("touch {MARKER}")\n')
sys.path.insert(0, WORK)

TOUCH = f'touch {MARKER}'
CODE_STRINGS = [
    f"__import__('os').system('{TOUCH}')",
    f"_x = __import__('os').system('{TOUCH}')\n",
    f"open({MARKER!r}, 'w').close()",
    f"exec(\"open({MARKER!r}, 'w')\")",
    f"custom_imports = dict(imports=['{MODULE}'])\n",
    f"_base_ = ['{osp.join(WORK, 'base.py')}']\n",
    f"model = dict(type=__import__('os').system('{TOUCH}'))\n",
    f"model = dict(x=[1, (2, {{'a': f\"{{__import__('os').system('{TOUCH}')}}\"}})])\n",
    "model = dict(type='FasterRCNN', x={{ _base_.model }})\n",
    f"gpu_ids = [0, 1]\nimport os; os.system('{TOUCH}')\n",
    f"model = (lambda: __import__('os').system('{TOUCH}'))()\n",
    f"@__import__('os').system\ndef f(): pass\n",
    f"class C:\n    __import__('os').system('{TOUCH}')\n",
    f"model = [x for x in [__import__('os').system('{TOUCH}')]]\n",
    f"model = dict(**{{'a': __import__('os').system('{TOUCH}')}})\n",
    '{{fileDirname}}', '"""', '\x00', 'model = ' + '[' * 300 + ']' * 300 + '\n',
    'model = ' + '(' * 2000 + ')' * 2000 + '\n', 'model = 1' + '0' * 5000 + '\n',
]

counts = collections.defaultdict(collections.Counter)


def _state():
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer()  # mmengine registers its four methods at the first buffer, lazily
    free = loading._LOCK.acquire(blocking=False)
    if free:
        loading._LOCK.release()
    return (sorted(map(repr, torch.serialization.get_safe_globals())),
            os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'),
            os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD'),
            torch.serialization._default_to_weights_only(None),
            sorted(HistoryBuffer._statistics_methods.items()),
            np.dtype('f8').byteorder, np.dtype('f8').str, loading._trusted, free)


def _no_code():
    assert not osp.exists(MARKER), 'a payload ran: the marker file exists'
    assert MODULE not in sys.modules, 'the marker module was imported'


def _outcome(target, call, path, allowed=(cs.DamagedCheckpoint, loading.RefusedCheckpoint)):
    """Run ``call``; it returns or raises one of ``allowed`` with one line naming ``path``."""
    before = _state()
    try:
        result = call()
        outcome = 'loaded'
    except allowed as err:
        message = str(err)
        assert '\n' not in message, f'a refusal of more than one line: {message!r}'
        assert path is None or str(path) in message, f'the refusal does not name {path}'
        result, outcome = None, type(err).__name__
    _no_code()
    assert _state() == before, 'the load changed process state'
    counts[target][outcome] += 1
    return result


def _file(data: bytes, name='x.pth') -> str:
    path = osp.join(WORK, name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


# ----------------------------------------------------------------------- opcode streams
GLOBALS = [name for _, name in __import__(
    'mmnorm_plugin.checkpoint.legacy_objects', fromlist=['x']).legacy_globals()] + [
    'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch.Size',
    'torch.serialization._get_layout', '_codecs.encode', 'builtins.set', 'builtins.getattr',
    'os.system', 'posix.system', 'builtins.eval', 'builtins.exec', 'builtins.__import__',
    'subprocess.call', 'numpy.frombuffer', 'numpy.ctypeslib.as_array',
    'mmengine.config.config.Config', 'mmengine.logging.history_buffer.HistoryBuffer',
    'numpy.dtypes.Float64DType', 'copyreg._reconstructor', 'torch.load']

_ints = st.one_of(st.integers(-3, 70), st.sampled_from([0x10, 2 ** 31, -2 ** 63, 2 ** 64,
                                                        10 ** 12, 1000000]),
                  st.integers(-2 ** 70, 2 ** 70))
_texts = st.one_of(st.sampled_from(['f8', 'i8', 'u1', 'b1', 'O8', 'U4', 'M8', 'V8', '<', '>', '|',
                                    '=', '|u1', 'mean', 'min', '__init__', '__class__',
                                    '__array_interface__', '_log_history', '_count_history',
                                    'max_length', 'statistics_methods', 'data', 'shape',
                                    'typestr', 'version', 'latin1', 'b', '__globals__',
                                    '__self__', 'system', '__reduce__']),
                   st.sampled_from(CODE_STRINGS), st.text(max_size=12))
_raw = st.one_of(st.binary(max_size=40), st.sampled_from([b'b', b'', b'\x00' * 8, b'\x00' * 16]))


def _leaf():
    return st.one_of(st.tuples(st.just('int'), _ints), st.tuples(st.just('str'), _texts),
                     st.tuples(st.just('bytes'), _raw),
                     st.tuples(st.just('float'), st.floats(allow_nan=True)),
                     st.tuples(st.just('const'), st.sampled_from([None, True, False])),
                     st.tuples(st.just('global'), st.sampled_from(GLOBALS)),
                     st.tuples(st.just('get'), st.integers(0, 40)))


def _node(children):
    return st.one_of(
        st.tuples(st.just('tuple'), st.lists(children, max_size=5)),
        st.tuples(st.just('list'), st.lists(children, max_size=4)),
        st.tuples(st.just('dict'), st.lists(st.tuples(children, children), max_size=4)),
        st.tuples(st.just('reduce'), st.sampled_from(GLOBALS), st.lists(children, max_size=5)),
        st.tuples(st.just('newobj'), st.sampled_from(GLOBALS), st.lists(children, max_size=3)),
        st.tuples(st.just('build'), children, children),
        st.tuples(st.just('selfref'), st.just(None)),
        st.tuples(st.just('template'), st.sampled_from(['array', 'dtype', 'scalar', 'buffer',
                                                        'attack']),
                  st.just(None), children))


def _emit(ops, expr, memo):
    kind = expr[0]
    if kind == 'int':
        ops.integer(expr[1])
    elif kind == 'str':
        ops.text(expr[1])
    elif kind == 'bytes':
        ops.raw_bytes(expr[1])
    elif kind == 'float':
        ops.real(expr[1])
    elif kind == 'const':
        ops.none() if expr[1] is None else ops.boolean(expr[1])
    elif kind == 'global':
        ops.glob(*expr[1].rsplit('.', 1))
    elif kind == 'get':
        if memo[0] == 0:
            ops.none()
            return
        ops.get(expr[1] % memo[0])
        return
    elif kind in ('tuple', 'list'):
        ops.op(pickle.EMPTY_LIST if kind == 'list' else pickle.MARK)
        if kind == 'list' and expr[1]:
            ops.op(pickle.MARK)
        for child in expr[1]:
            _emit(ops, child, memo)
        if kind == 'list':
            if expr[1]:
                ops.op(pickle.APPENDS)
        else:
            ops.op(pickle.TUPLE)
    elif kind == 'dict':
        ops.op(pickle.EMPTY_DICT)
        for key, value in expr[1]:
            _emit(ops, key, memo)
            _emit(ops, value, memo)
            ops.op(pickle.SETITEM)
    elif kind in ('reduce', 'newobj'):
        ops.glob(*expr[1].rsplit('.', 1))
        ops.op(pickle.MARK)
        for child in expr[2]:
            _emit(ops, child, memo)
        ops.op(pickle.TUPLE + (pickle.REDUCE if kind == 'reduce' else pickle.NEWOBJ))
    elif kind == 'build':
        _emit(ops, expr[1], memo)
        _emit(ops, expr[2], memo)
        ops.op(pickle.BUILD)
    elif kind == 'selfref':  # a list that contains itself
        ops.op(pickle.EMPTY_LIST)
        ops.put(memo[0] % 256)
        ops.get(memo[0] % 256)
        memo[0] += 1
        ops.op(pickle.APPEND)
        return
    elif kind == 'template':
        _template(ops, expr[1], expr[3], memo)
    if memo[0] < 256:
        ops.put(memo[0])
        memo[0] += 1


def _dtype(ops, spec, order):
    ops.glob('numpy', 'dtype').text(spec).boolean(False).boolean(True)
    ops.op(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK).integer(3).text(order)
    ops.none().none().none().integer(-1).integer(-1).integer(0)
    ops.op(pickle.TUPLE + pickle.BUILD)


def _template(ops, which, child, memo):
    """Real old-format object streams, with a random child spliced into one field."""
    if which == 'dtype':
        _dtype(ops, 'f8', '<')
    elif which == 'scalar':
        ops.glob('numpy._core.multiarray', 'scalar')
        _dtype(ops, 'i8', '<')
        _emit(ops, child, memo)
        ops.op(pickle.TUPLE2 + pickle.REDUCE)
    elif which == 'array':
        ops.glob('numpy._core.multiarray', '_reconstruct').glob('numpy', 'ndarray')
        ops.integer(0).op(pickle.TUPLE1).raw_bytes(b'b').op(pickle.TUPLE3 + pickle.REDUCE)
        ops.op(pickle.MARK).integer(1)
        _emit(ops, child, memo)  # the shape
        _dtype(ops, 'f8', '<')
        ops.boolean(False).raw_bytes(b'\x00' * 16).op(pickle.TUPLE + pickle.BUILD)
    elif which == 'buffer':
        ops.glob(*hp.HISTORY_BUFFER).op(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        ops.op(pickle.EMPTY_DICT).text('max_length')
        _emit(ops, child, memo)
        ops.op(pickle.SETITEM).text('_log_history')
        _template(ops, 'array', ('tuple', [('int', 2)]), memo)
        ops.op(pickle.SETITEM).text('_count_history')
        _template(ops, 'array', ('tuple', [('int', 2)]), memo)
        ops.op(pickle.SETITEM + pickle.BUILD)
    else:  # the attack, at a random address
        data = hp.history_buffer_attack(child[1] if child[0] == 'int' and child[1] >= 0 else 16,
                                        8)
        ops.op(data[2:-1])  # without PROTO and STOP: one dict on the stack


_exprs = st.recursive(_leaf(), _node, max_leaves=25)


@given(expr=_exprs, wrap=st.booleans(), flips=st.lists(st.tuples(st.integers(0, 10 ** 6),
                                                                   st.integers(1, 255)),
                                                         max_size=2))
def opcode_streams(expr, wrap, flips):
    ops = hp.Ops()
    memo = [0]
    if wrap:
        ops.op(pickle.EMPTY_DICT).text('state_dict').op(pickle.EMPTY_DICT + pickle.SETITEM)
        ops.text('meta')
    _emit(ops, expr, memo)
    if wrap:
        ops.op(pickle.SETITEM)
    data = bytearray(ops.stop())
    for at, xor in flips:  # damage the stream itself (the zip CRCs stay valid)
        data[at % len(data)] ^= xor
    path = _file(hp.torch_zip(bytes(data)))
    result = _outcome('opcode_streams', lambda: cs.load_verified_checkpoint(path), path)
    if result is not None:
        materialize(result)  # what loaded holds only accepted types


# ----------------------------------------------------------------------------- containers
_dtypes_np = st.sampled_from(['f8', 'f4', 'f2', 'i8', 'i4', 'u1', 'b1', 'c16', '>f8', '>i4',
                              'U3', 'O', 'M8[s]', 'V4'])
_dtypes_t = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16,
                             torch.int64, torch.uint8, torch.bool, torch.complex64])


@st.composite
def _np_value(draw):
    dtype = np.dtype(draw(_dtypes_np))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    if dtype.kind == 'O':
        arr = np.empty(shape, dtype=object)
        arr.fill(draw(st.sampled_from(['x', 1, None])))
    else:
        raw = draw(st.binary(min_size=math.prod(shape) * dtype.itemsize,
                             max_size=math.prod(shape) * dtype.itemsize))
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if draw(st.booleans()) and arr.ndim >= 2:
        arr = arr.T
    return arr[()] if draw(st.booleans()) and arr.ndim == 0 else arr


@st.composite
def _tensor(draw):
    dtype = draw(_dtypes_t)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    t = (torch.randn(shape) * draw(st.sampled_from([1, 1e30, float('nan')]))).to(dtype)
    odd = draw(st.sampled_from(['plain', 'view', 'expand', 'meta', 'sparse', 'param', 'grad',
                                'quant', 'big_expand']))
    if odd == 'view' and t.dim() == 2:
        t = t.t()
    elif odd == 'expand':
        t = torch.zeros(1, dtype=dtype).expand(draw(st.integers(0, 100)))
    elif odd == 'big_expand':
        t = torch.zeros(1, dtype=torch.uint8).expand(80 << 20)  # 80 MiB over 1 byte
    elif odd == 'meta':
        t = torch.empty(shape, dtype=dtype, device='meta')
    elif odd == 'sparse' and t.dim() >= 1 and dtype != torch.bool:
        t = t.to_sparse()
    elif odd == 'param' and dtype.is_floating_point:
        t = torch.nn.Parameter(t)
    elif odd == 'grad' and dtype.is_floating_point:
        t = t.requires_grad_()
    elif odd == 'quant':
        t = torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8)
    return t


@st.composite
def _history_buffer(draw):
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer(max_length=draw(st.integers(1, 20)))
    for value in draw(st.lists(st.floats(allow_nan=True), max_size=5)):
        buffer.update(value)
    if draw(st.booleans()):
        buffer._log_history = draw(_np_value())
    return buffer


def _od(items):
    out = collections.OrderedDict(items)
    out._metadata = {'': {'version': 1}}
    return out


_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
              st.binary(max_size=10), st.sampled_from(CODE_STRINGS), _np_value(), _tensor(),
              _history_buffer(), st.just(torch.float32), st.just(torch.device('cpu')),
              st.just(torch.Size([2, 3]))),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=3).map(
            lambda d: _od(d.items())),
        st.frozensets(st.integers(), max_size=3).map(set)),
    max_leaves=12)


@given(state=st.dictionaries(st.text(max_size=10), _values, max_size=4),
       meta=st.dictionaries(st.sampled_from(['cfg', 'config', 'iter', 'seed', 'x']),
                            st.one_of(st.sampled_from(CODE_STRINGS), _values), max_size=4),
       hub=_values, checksum=st.booleans())
def containers(state, meta, hub, checksum):
    from mmnorm_plugin.checkpoint.loading import compare_checkpoint_with_model
    checkpoint = dict(state_dict=state, meta=meta, message_hub=hub)
    if checksum:
        cs.add_checksum(checkpoint)
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    path = _file(buf.getvalue())
    result = _outcome('containers', lambda: cs.load_verified_checkpoint(path, return_status=True),
                      path)
    if result is None:
        return
    loaded, status = result
    # our own checksum never reports damage on an intact file, nor is missing
    assert status == (cs.VERIFIED if checksum else cs.UNVERIFIED), status
    model = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _outcome('containers_compare', lambda: compare_checkpoint_with_model(
        model, loaded, dict(type='X', layers=[1, 2])), None, allowed=())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------- config text
_literals = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.tuples(c, c),
                        st.dictionaries(st.text(max_size=5), c, max_size=3)), max_leaves=10)


@given(pieces=st.lists(st.one_of(st.sampled_from(CODE_STRINGS), st.text(max_size=30),
                                 _literals.map(lambda v: f'model = {v!r}\n')), max_size=5),
       literal=_literals)
def config_text(pieces, literal):
    text = '\n'.join(pieces)
    _outcome('config_text', lambda: literal_assignments(text), None, allowed=(NotLiteral,))
    # a literal written as pretty_text writes it reads back as the same value
    values, problems = _outcome('config_text_roundtrip', lambda: literal_assignments(
        f'x = {literal!r}\n'), None, allowed=())
    assert not problems and values['x'] == literal, (literal, values, problems)


# ------------------------------------------------------------ WeightsOnlyCheckpointHook
_good_record = st.integers(0, 6).flatmap(lambda n: st.fixed_dictionaries({
    '__mmnorm_history_buffer__': st.just(True),
    'log': st.lists(st.floats(), min_size=n, max_size=n).map(torch.tensor),
    'count': st.lists(st.integers(0, 9), min_size=n, max_size=n).map(torch.tensor),
    'max_length': st.integers(max(n, 1), 10)}))
_any_record = st.fixed_dictionaries(
    {'__mmnorm_history_buffer__': st.sampled_from([True, 1, 'yes']),
     'log': st.one_of(_tensor(), _np_value(), _values), 'count': st.one_of(_tensor(), _values),
     'max_length': st.one_of(st.integers(-2, 10 ** 9), st.text(max_size=3), st.none())},
    optional={'extra': _values})


@given(record=st.one_of(_good_record, _any_record),
       array=st.one_of(_tensor(), _values, st.lists(st.floats(), max_size=3).map(torch.tensor)))
def weights_only_records(record, array):
    from mmnorm_plugin.engine import WeightsOnlyCheckpointHook
    checkpoint = dict(message_hub=dict(log_scalars=dict(loss=record)),
                      meta=dict(a={'__mmnorm_ndarray__': array}))
    _outcome('weights_only_records', lambda: WeightsOnlyCheckpointHook().after_load_checkpoint(
        None, checkpoint), 'checkpoint', allowed=(loading.RefusedCheckpoint,))


# ------------------------------------------------------------------------ tampered bytes
def _reference_checkpoint():
    from mmengine.logging import MessageHub
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    hub = MessageHub('fuzz_reference')
    for i in range(4):
        hub.update_scalar('train/loss', i + 0.5)
    checkpoint = dict(meta=dict(iter=4, seed=np.int64(3), cfg='model = dict(type="X")\n'),
                      state_dict=model.state_dict(), message_hub=hub.state_dict(),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1).state_dict())
    cs.add_checksum(checkpoint)
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue(), checkpoint['meta']['checksum']['sections']


_REFERENCE = None


@given(edits=st.lists(st.tuples(st.sampled_from(['flip', 'truncate', 'insert', 'zero']),
                                st.integers(0, 10 ** 7), st.integers(1, 255)),
                      min_size=1, max_size=3))
def tampered_bytes(edits):
    global _REFERENCE
    if _REFERENCE is None:
        _REFERENCE = _reference_checkpoint()
    data, digests = _REFERENCE
    data = bytearray(data)
    for kind, at, value in edits:
        at %= len(data)
        if kind == 'flip':
            data[at] ^= value
        elif kind == 'truncate':
            del data[at:]
        elif kind == 'insert':
            data[at:at] = bytes([value]) * value
        else:
            data[at:at + value] = bytes(len(data[at:at + value]))
        if not data:
            data = bytearray(b'\x00')
    path = _file(bytes(data), 'tampered.pth')
    # damage is reported as damage (never as a refusal to walk back from), or not at all
    result = _outcome('tampered_bytes',
                      lambda: cs.load_verified_checkpoint(path, return_status=True), path,
                      allowed=(cs.DamagedCheckpoint,))
    if result is not None:  # it loaded: then it is the original, verified
        loaded, status = result
        assert status == cs.VERIFIED, status
        found = cs._digests(cs._sections(loaded))
        assert found == digests, 'damaged bytes loaded as different content'


# ------------------------------------------------------------------------ guarded loader
@given(meta=st.dictionaries(st.sampled_from(['cfg', 'config', 'iter', 'gpu_ids', 'x']),
                            st.one_of(st.sampled_from(CODE_STRINGS), _values), max_size=4),
       checksum=st.booleans())
def guarded_loader(meta, checksum):
    from mmengine.runner import CheckpointLoader

    from mmnorm_plugin.engine import guarded
    checkpoint = dict(meta=dict(meta, config=meta.get('config', CODE_STRINGS[0])),
                      state_dict={'w': torch.ones(2)})
    if checksum:
        cs.add_checksum(checkpoint)
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    path = _file(buf.getvalue(), 'guarded.pth')
    result = _outcome('guarded_loader', lambda: CheckpointLoader.load_checkpoint(
        guarded(path), map_location='cpu', logger='silent'), path)
    if result is not None:
        assert 'config' not in result['meta'], "meta['config'] reached the Runner"


TARGETS = dict(opcode_streams=opcode_streams, containers=containers, config_text=config_text,
               weights_only_records=weights_only_records, tampered_bytes=tampered_bytes,
               guarded_loader=guarded_loader)


def run(examples: int, targets, seed: int = 0) -> dict:
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='ERROR')  # the loaders' status lines
    report = {}
    for name in targets:
        test = TARGETS[name]
        configured = settings(max_examples=examples, derandomize=not seed, database=None,
                              deadline=None, suppress_health_check=list(HealthCheck),
                              print_blob=True)(test)
        if seed:  # another fixed stream of inputs
            from hypothesis import seed as hypothesis_seed
            configured = hypothesis_seed(seed)(configured)
        start = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            configured()
        report[name] = dict(tried=sum(v for k, v in counts[name].items()),
                            outcomes=dict(counts[name]), seconds=round(time.time() - start, 1))
        for extra in [k for k in counts if k.startswith(name + '_')]:
            report[name][extra] = dict(counts[extra])
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--examples', type=int,
                        default=int(os.environ.get('FUZZ_EXAMPLES', 300)),
                        help='examples per target (default: $FUZZ_EXAMPLES or 300)')
    parser.add_argument('--targets', nargs='+', default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument('--seed', type=int, default=0,
                        help='0: derandomized (the same inputs every run); else a random seed')
    parser.add_argument('--json', help='also write the report here')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = run(args.examples, args.targets, args.seed)
    line = json.dumps(dict(examples_per_target=args.examples, seed=args.seed, targets=report))
    print(line)
    if args.json:
        with open(args.json, 'w') as f:
            f.write(line + '\n')


if __name__ == '__main__':
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(WORK, ignore_errors=True)
