"""Property-based fuzzing of every norm's state loading (hypothesis).

Each example starts from a trained layer's own checkpoint (CBN with its window) and corrupts it:
entries dropped, unknown keys added, values replaced by tensors of random shapes, dtypes,
devices ('meta'), layouts (sparse) and values (NaN, inf, beyond float32, negative) or by
non-tensors, entries cast or reshaped, the metadata version replaced. Loading it (strict or
not) must either succeed, leaving a layer that trains, or be refused with one line per
problem naming the layer or key, leaving the layer bit-identical (tensors, parameter objects,
state outside buffers, Python mirrors). Any other exception is a failure.

The examples are derandomized (the same every run). ``FUZZ_EXAMPLES`` sets how many per norm
(default 300; ``make fuzz`` passes a larger count).
"""
import copy
import math
import os
import warnings
from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms.bgn import BGN, SyncBGN
from mmnorm_plugin.norms.bkn import BKN, SyncBKN
from mmnorm_plugin.norms.cbn import CBN, SyncCBN
from mmnorm_plugin.norms.mabn import MABN

EXAMPLES = int(os.environ.get('FUZZ_EXAMPLES', '300'))
C = 4
NORMS = {
    'CBN': (lambda: CBN(C, buffer_num=2), nn.Conv2d),
    'SyncCBN': (lambda: SyncCBN(C, buffer_num=2), nn.Conv2d),
    'MABN': (lambda: MABN(C, buffer_size=2, warmup_iters=1, renorm_hold_iters=2), CenConv2d),
    'BGN': (lambda: BGN(C, num_groups=2), nn.Conv2d),
    'SyncBGN': (lambda: SyncBGN(C, num_groups=2), nn.Conv2d),
    'BKN': (lambda: BKN(C), nn.Conv2d),
    'SyncBKN': (lambda: SyncBKN(C), nn.Conv2d),
}
# names a checkpoint of some layer, or of an older layout, may carry
OTHER_NAMES = ('hist_sqmean', 'hist_count', 'hist_valid', 'hist_mean_grad', 'hist_len',
               'chi2_history', 'psi_history', 'num_iters', 'running_std', 'prior_status',
               'nonfinite_count', 'sub.weight')
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
          torch.int32, torch.uint8, torch.bool, torch.complex64)
FILLS = ('randn', 'zeros', 'ones', 'nan', 'inf', '-inf', 'huge', 'negative', 'counter')


def _step(model, seed):
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(seed)) + 1
    y = model(x)
    y.square().mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    model.zero_grad()


_TRAINED = {}


def _trained(name):
    if name not in _TRAINED:
        torch.manual_seed(0)
        make, conv = NORMS[name]
        model = nn.Sequential(conv(3, C, 3, padding=1, bias=False), make())
        for seed in range(3):  # CBN: a window with derivative history
            _step(model, seed)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            _TRAINED[name] = (model, model.state_dict())
    return _TRAINED[name]


def _fill(shape, dtype, fill, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if fill == 'counter' or not (dtype.is_floating_point or dtype.is_complex):
        return torch.randint(0, 4, shape, generator=g).to(dtype)
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    value = {'randn': base, 'zeros': base * 0, 'ones': base * 0 + 1,
             'nan': base.masked_fill(base > 0, math.nan),
             'inf': base.masked_fill(base > 0, math.inf),
             '-inf': base.masked_fill(base > 0, -math.inf), 'huge': base * 1e300,
             'negative': -base.abs() - 1}[fill]
    return value.to(dtype)


@st.composite
def _tensors(draw, like=None):
    """A tensor of the entry's shape or another, any dtype, values, device and layout."""
    if like is not None and draw(st.booleans()):
        shape = tuple(like.shape)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    value = _fill(shape, draw(st.sampled_from(DTYPES)), draw(st.sampled_from(FILLS)),
                  draw(st.integers(0, 2**16)))
    where = draw(st.sampled_from(('dense', 'dense', 'dense', 'meta', 'sparse')))
    if where == 'meta':
        value = value.to('meta')
    elif where == 'sparse' and value.dim() and value.dtype != torch.bool:
        value = value.to_sparse()
    return value


def _perturbations(value):
    """Near-valid variants of an entry: what a corrupt or foreign checkpoint holds."""
    out = [value.double() * 1e300, value.to('meta'), value.unsqueeze(0), value.reshape(-1)[:1],
           value.float(), value.long(), value.to(torch.bool),
           value.flip(0) if value.dim() else value]
    if value.numel():
        for bad in (math.nan, math.inf, -1.0, 2.0 ** 40):
            changed = value.clone().double()
            changed.view(-1)[0] = bad
            out.append(changed.to(value.dtype) if value.is_floating_point() else changed)
    if value.dim() and value.dtype != torch.bool:
        out.append(value.to_sparse())
    return out


@st.composite
def _corruptions(draw, state):
    keys = sorted(state)
    kind = draw(st.sampled_from(('drop', 'add', 'replace', 'perturb', 'perturb', 'other',
                                 'version')))
    if kind == 'drop':
        return ('drop', draw(st.sampled_from(keys)))
    if kind == 'add':
        return ('set', draw(st.sampled_from(OTHER_NAMES)), draw(_tensors()))
    if kind == 'replace':
        key = draw(st.sampled_from(keys))
        return ('set', key, draw(_tensors(like=state[key])))
    if kind == 'perturb':
        key = draw(st.sampled_from(keys))
        return ('set', key, draw(st.sampled_from(_perturbations(state[key]))))
    if kind == 'other':
        return ('set', draw(st.sampled_from(keys)),
                draw(st.sampled_from((None, 3, 2.5, 'x', [1.0], {'a': 1}))))
    return ('version', draw(st.sampled_from((None, 0, 1, 2, 3, 4, 5, 6, 99, -1, '5', 2.5,
                                             True))))


def _apply(state, corruptions):
    new = OrderedDict((k, v.clone()) for k, v in state.items())
    new._metadata = copy.deepcopy(state._metadata)
    for corruption in corruptions:
        if corruption[0] == 'drop':
            new.pop('1.' + corruption[1], None)
        elif corruption[0] == 'set':
            new['1.' + corruption[1]] = corruption[2]
        else:
            new._metadata['1'] = dict(new._metadata['1'], version=corruption[1])
            if corruption[1] is None:
                del new._metadata['1']['version']
    return new


def _everything(model):
    """Every observable piece of state: tensors (the window included), which parameter
    objects the layer holds, and its Python mirrors."""
    layer = model[1]
    tensors = {f'state.{k}': v.clone() for k, v in model.state_dict().items()}
    tensors.update((f'attr.{k}', v.clone()) for k, v in vars(layer).items()
                   if isinstance(v, torch.Tensor))
    tensors.update((f'buffer.{k}', v.clone()) for k, v in layer.named_buffers())
    objects = {k: id(v) for k, v in layer.named_parameters()}
    mirrors = {k: v for k, v in vars(layer).items()
               if isinstance(v, (bool, int, float, str, type(None)))}
    return tensors, objects, mirrors


def _identical(a, b):
    (ta, oa, ma), (tb, ob, mb) = a, b
    assert oa == ob and ma == mb
    assert list(ta) == list(tb)
    for key, value in ta.items():
        other = tb[key]
        assert value.dtype == other.dtype and value.shape == other.shape, key
        assert value.device == other.device, key
        if value.device.type != 'meta':
            assert torch.equal(value, other), key


def _check_one(name, corruptions, strict):
    model, state = _trained(name)
    model = copy.deepcopy(model)
    before = _everything(model)
    corrupt = _apply(state, corruptions)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the layers' notes (window restarts, ...)
            result = model.load_state_dict(corrupt, strict=strict)
    except RuntimeError as err:
        header, *problems = str(err).split('\n\t')
        assert header.startswith('Error(s) in loading state_dict for Sequential:'), str(err)
        assert problems, str(err)
        for line in problems:
            assert '\n' not in line and (line.startswith('1') or 'for 1.' in line
                                         or 'key(s) in state_dict' in line), str(err)
        _identical(_everything(model), before)
        return 'refused'
    if [k for k in result.missing_keys + result.unexpected_keys if k.startswith('1.')]:
        _identical(_everything(model), before)  # a layer loads whole or not at all
        return 'partial'
    # loaded: the layer holds only finite state and trains on
    for key, value in model[1].state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _step(model, 7)
        model.eval()
        model(torch.randn(2, 3, 5, 5))
    return 'loaded'


@pytest.mark.parametrize('name', sorted(NORMS))
def test_any_state_dict_loads_cleanly_or_is_refused_without_a_trace(name):
    own = {k[2:]: v for k, v in _trained(name)[1].items() if k.startswith('1.')}
    outcomes = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(corruptions=st.lists(_corruptions(own), min_size=1, max_size=3),
           strict=st.booleans())
    def check(corruptions, strict):
        outcomes.append(_check_one(name, corruptions, strict))

    check()
    # the corpus exercises both sides (a fuzzer that only ever refuses proves little)
    assert outcomes.count('refused') > 0 and outcomes.count('loaded') > 0, outcomes
