"""Every refused operation leaves a norm's state untouched (issue 18 items 2-5).

Each norm and synced variant (outside a process group) is trained a few optimizer steps, then
offered a checkpoint or an input it must refuse. The property asserted is the strongest one
a user can observe: ``state_dict()`` is bit-identical afterwards, and the next training step
gives bit-identically what an untouched copy gives (hidden Python mirrors included).
"""
import copy
import math
import warnings

import pytest
import torch
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch import nn

from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms import reporting
from mmnorm_plugin.norms.bgn import BGN, SyncBGN
from mmnorm_plugin.norms.bkn import BKN, SyncBKN
from mmnorm_plugin.norms.cbn import CBN, SyncCBN
from mmnorm_plugin.norms.iteration_clock import end_iteration
from mmnorm_plugin.norms.mabn import MABN

C = 8
NORMS = {
    'CBN': (lambda: CBN(C, buffer_num=3), nn.Conv2d),
    'SyncCBN': (lambda: SyncCBN(C, buffer_num=3), nn.Conv2d),
    'MABN': (lambda: MABN(C, buffer_size=3, warmup_iters=2, renorm_hold_iters=4), CenConv2d),
    'BGN': (lambda: BGN(C, num_groups=2), nn.Conv2d),
    'SyncBGN': (lambda: SyncBGN(C, num_groups=2), nn.Conv2d),
    'BKN': (lambda: BKN(C), nn.Conv2d),
    'SyncBKN': (lambda: SyncBKN(C), nn.Conv2d),
}
NAMES = sorted(NORMS)


def _step(model, seed):
    """One training step: forward, backward, SGD (which ends the iteration for CBN)."""
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed)) * 2 + 1
    y = model(x)
    y.square().mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    model.zero_grad()
    return y.detach()


def _trained(name, steps=5):
    torch.manual_seed(0)
    make, conv = NORMS[name]
    model = nn.Sequential(conv(3, C, 3, padding=1, bias=False), make())
    for seed in range(steps):
        _step(model, seed)
    return model


def _snapshot(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}


def _mirrors(layer):
    """The layer's Python state besides tensors (CBN's iteration clock)."""
    return {k: v for k, v in vars(layer).items()
            if k != 'training' and isinstance(v, (bool, int, float, str, type(None)))}


def _assert_untouched(model, before, twin):
    """Bit-identical state, and the next step bit-identical to the untouched twin's."""
    layer = model[1]
    after = layer.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert torch.equal(_step(model, 100), _step(twin, 100))
    for (key, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), key


def _load(layer, state, loader):
    if loader == 'torch_strict':
        with pytest.raises(RuntimeError) as err:
            layer.load_state_dict(state, strict=True)
        return str(err.value)
    if loader == 'torch_non_strict':
        try:
            result = layer.load_state_dict(state, strict=False)
        except RuntimeError as err:  # size/value problems raise even when not strict
            return str(err)
        return f'missing {result.missing_keys} unexpected {result.unexpected_keys}'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        mmengine_load_state_dict(layer, state, strict=False)  # logs, never raises
    return ''


LOADERS = ['torch_strict', 'torch_non_strict', 'mmengine_non_strict']


# ------------------------------------------------------------------ item 2: refused loads
def _missing_running_var(state):
    del state['running_var']


def _unexpected_key(state):
    state['running_std'] = torch.ones(C)


def _negative_count(state):
    state['num_batches_tracked'] = torch.tensor(-5)


def _float_count(state):
    state['num_batches_tracked'] = torch.tensor(3.0)


def _negative_variance(state):
    state['running_var'] = -state['running_var']


def _nan_mean(state):
    state['running_mean'] = torch.full_like(state['running_mean'], math.nan)


def _meta_weight(state):
    state['weight'] = torch.empty(C, device='meta')


def _meta_bias(state):
    state['bias'] = torch.empty(C, device='meta')


def _overflowing_variance(state):
    # finite in float64, inf once cast to the layer's float32
    state['running_var'] = state['running_var'].double() * 1e300


def _nan_weight(state):
    state['weight'][0] = math.nan


def _sparse_mean(state):
    state['running_mean'] = state['running_mean'].to_sparse()


def _complex_bias(state):
    state['bias'] = state['bias'].to(torch.complex64)


BAD_CHECKPOINTS = {
    'missing_running_var': (_missing_running_var, 'running_var'),
    # issue 28: refused only after the other entries (and CBN's window) were copied, or not
    # at all
    'meta_weight': (_meta_weight, 'weight'),
    'meta_bias': (_meta_bias, 'bias'),
    'overflowing_variance': (_overflowing_variance, 'running_var'),
    'nan_weight': (_nan_weight, 'weight'),
    'sparse_mean': (_sparse_mean, 'running_mean'),
    'complex_bias': (_complex_bias, 'bias'),
    'unexpected_key': (_unexpected_key, 'running_std'),
    'negative_count': (_negative_count, 'num_batches_tracked'),
    'float_count': (_float_count, 'num_batches_tracked'),
    'negative_variance': (_negative_variance, 'running_var'),
    'nan_mean': (_nan_mean, 'running_mean'),
}


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('bad', sorted(BAD_CHECKPOINTS))
@pytest.mark.parametrize('name', NAMES)
def test_refused_checkpoint_leaves_every_norm_untouched(name, bad, loader):
    """Before: CBN copied weight, bias, running_mean and its window before raising on a
    missing running_var (strict), or kept the checkpoint's mean next to its old variance (not
    strict); every norm accepted negative counters and variances."""
    model = _trained(name)
    twin = copy.deepcopy(model)
    before, mirrors = _snapshot(model[1]), _mirrors(model[1])
    state = {k: v.clone() for k, v in model[1].state_dict().items()}
    # entries that fit, which a partial load would have copied
    state['weight'] = torch.randn(C)
    state['bias'] = torch.randn(C)
    state['running_mean'] = torch.randn(state['running_mean'].shape)
    corrupt, key = BAD_CHECKPOINTS[bad]
    corrupt(state)
    message = _load(model[1], state, loader)
    if loader != 'mmengine_non_strict':
        assert key in message
    assert _mirrors(model[1]) == mirrors
    _assert_untouched(model, before, twin)


@pytest.mark.parametrize('name', NAMES)
def test_a_copy_that_fails_half_way_is_rolled_back(name, monkeypatch):
    """Issue 28: validation cannot foresee every failure of torch's per-entry copy. Before: when
    the third copy failed, the two entries copied before it (and the ones after it) stayed; now
    the layer is put back as it was."""
    model = _trained(name)
    twin = copy.deepcopy(model)
    before, mirrors = _snapshot(model[1]), _mirrors(model[1])
    parameters = dict(model[1].named_parameters())
    state = {k: v.clone() for k, v in model[1].state_dict().items()}
    state['weight'], state['bias'] = torch.randn(C), torch.randn(C)
    state['running_mean'] = torch.randn(state['running_mean'].shape)
    state['running_var'] = torch.rand(state['running_var'].shape) + 0.5
    calls = []
    copy_ = torch.Tensor.copy_

    def failing_copy(tensor, src, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError('simulated copy failure')
        return copy_(tensor, src, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, 'copy_', failing_copy)
        with pytest.raises(RuntimeError, match='simulated copy failure'):
            model[1].load_state_dict(state)
    assert len(calls) >= 3
    assert dict(model[1].named_parameters()) == parameters  # the very same objects
    assert _mirrors(model[1]) == mirrors
    _assert_untouched(model, before, twin)


@pytest.mark.parametrize('version', ['5', 2.5, -1, True])
@pytest.mark.parametrize('name', ['CBN', 'BGN'])
def test_a_version_that_is_no_version_number_is_refused_in_one_line(name, version):
    """Issue 28: a string version crashed inside torch (TypeError after validation); a float,
    negative or bool version loaded."""
    model = _trained(name)
    twin = copy.deepcopy(model)
    before = _snapshot(model[1])
    state = model[1].state_dict()
    state._metadata[''] = dict(state._metadata[''], version=version)
    with pytest.raises(RuntimeError, match=r'\n\t\w+: state-dict metadata version .* is not a '
                                           r'version number$'):
        model[1].load_state_dict(state)
    _assert_untouched(model, before, twin)


@pytest.mark.parametrize('name', ['CBN', 'SyncCBN'])
def test_a_window_entry_beyond_float32_is_refused(name):
    """Issue 28: finiteness is checked as the layer will hold the values. Before: a float64
    1e300 in hist_var passed the check and loaded as inf in the float32 window."""
    model = _trained(name)
    twin = copy.deepcopy(model)
    before, mirrors = _snapshot(model[1]), _mirrors(model[1])
    state = _snapshot(model[1])
    state['running_mean'] = torch.randn(C)  # fits: a partial load would copy it
    state['hist_var'] = state['hist_var'].double()
    state['hist_var'][0, 0, 0] = 1e300
    with pytest.raises(RuntimeError, match='hist_var: holds values beyond the range'):
        model[1].load_state_dict(state)
    assert _mirrors(model[1]) == mirrors
    _assert_untouched(model, before, twin)


@pytest.mark.parametrize('name', NAMES)
def test_assign_loads_the_checkpoint_tensors_themselves(name):
    """load_state_dict(assign=True) keeps torch's meaning through the transaction: the layer
    holds the checkpoint's tensors (parameters wrapped, requires_grad kept)."""
    model = _trained(name)
    state = {k: v.clone() for k, v in model[1].state_dict().items()}
    fresh = copy.deepcopy(model[1])
    fresh.load_state_dict(state, assign=True)
    assert fresh.running_var is state['running_var']
    assert fresh.weight.requires_grad and torch.equal(fresh.weight, state['weight'])
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key


def _window_corruptions():
    return {
        'hist_ptr': (7, r'hist_ptr: values must be in \[0, 3\)'),
        'hist_ptr_negative': (-1, r'hist_ptr: a counter must be >= 0'),
        'hist_len': (9, r'hist_len: values must be in \[0, 3\]'),
        'num_iters': (-5, r'num_iters: a counter must be >= 0'),
        'hist_count': (-2, r'hist_count: a counter must be >= 0'),
        'hist_var': (-1.0, r'hist_var: a variance .* must be >= 0'),
        'hist_mean': (math.inf, r'hist_mean: holds non-finite values'),
    }


@pytest.mark.parametrize('entry', sorted(_window_corruptions()))
@pytest.mark.parametrize('name', ['CBN', 'SyncCBN'])
def test_out_of_range_window_values_are_refused_by_key(name, entry):
    """Before: hist_ptr=7 (buffer_num=3) loaded and the next step raised IndexError;
    hist_len=9 failed later with "shape '[8, 9]' is invalid"; -1 and -5 were accepted."""
    model = _trained(name)
    twin = copy.deepcopy(model)
    before = _snapshot(model[1])
    value, pattern = _window_corruptions()[entry]
    state = _snapshot(model[1])
    key = entry.replace('_negative', '')
    if state[key].dim() == 0:
        state[key] = torch.tensor(value, dtype=state[key].dtype)
    else:
        state[key].view(-1)[0] = value
    with pytest.raises(RuntimeError, match=pattern):
        model[1].load_state_dict(state)
    _assert_untouched(model, before, twin)


def test_ring_pointer_must_follow_the_fill_level():
    model = _trained('CBN', steps=2)  # two entries in a ring of 3: hist_ptr == hist_len == 2
    state = _snapshot(model[1])
    assert state['hist_len'].tolist() == [2] and state['hist_ptr'].tolist() == [2]
    state['hist_ptr'] = torch.tensor([0])
    with pytest.raises(RuntimeError, match='hist_ptr: .* does not follow hist_len'):
        copy.deepcopy(model[1]).load_state_dict(state)
    state['hist_valid'] = state['hist_valid'].long()
    with pytest.raises(RuntimeError, match='hist_valid: expected a bool mask'):
        copy.deepcopy(model[1]).load_state_dict(state)


def test_mabn_refuses_negative_second_moments():
    model = _trained('MABN')
    twin = copy.deepcopy(model)
    before = _snapshot(model[1])
    state = _snapshot(model[1])
    state['chi2_history'][0, 0] = -1.0
    with pytest.raises(RuntimeError, match='chi2_history: a variance'):
        model[1].load_state_dict(state)
    _assert_untouched(model, before, twin)


# ------------------------------------------------------------------ item 2: refused inputs
BAD_INPUTS = {
    'float64': (lambda: torch.randn(2, C, 4, 4, dtype=torch.float64),
                'statistics in torch.float32 but got a torch.float64 input'),
    'other_device': (lambda: torch.empty(2, C, 4, 4, device='meta'),
                     'holds its state on cpu but got an input on meta'),
    'three_dims': (lambda: torch.randn(2, C, 4), 'expects a 4-D NCHW input'),
    'channels': (lambda: torch.randn(2, C + 1, 4, 4), f'got an input with {C + 1} channels'),
    'one_value': (lambda: torch.randn(1, C, 1, 1), 'more than 1 value per'),
}


@pytest.mark.parametrize('name, bad', [
    (name, bad) for name in NAMES for bad in sorted(BAD_INPUTS)
    # BGN(8, num_groups=2) pools 4 channels per statistic: one pixel is 4 values, no refusal
    if not (name.endswith('BGN') and bad == 'one_value')])
def test_refused_input_leaves_every_norm_untouched(name, bad):
    """Before: a float64 input into a float32 CBN raised torch's raw 'mixed dtype (CPU)'
    error after 11 state entries (statistics, counters, window and pointers) had changed."""
    model = _trained(name)
    twin = copy.deepcopy(model)
    before = _snapshot(model[1])
    make, match = BAD_INPUTS[bad]
    x = make()
    if x.device.type == 'cpu':
        x.requires_grad_()
    with pytest.raises(ValueError, match=match):
        model[1](x)
    _assert_untouched(model, before, twin)


# ------------------------------------------------------------------ item 3: iterations
def test_one_cbn_after_two_convs_is_refused_before_it_changes_state():
    """Before: both convs' statistics entered one window and each call counted as an
    iteration (burn-in ended after half the steps)."""
    conv_a, conv_b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
    cbn = CBN(4, buffer_num=2)
    cbn(conv_a(torch.randn(2, 3, 5, 5)))
    before = _snapshot(cbn)
    with pytest.raises(RuntimeError, match='two different convolutions in one training'):
        cbn(conv_b(torch.randn(2, 3, 5, 5)))
    for key, value in cbn.state_dict().items():
        assert torch.equal(value, before[key]), key
    cbn(conv_a(torch.randn(2, 3, 5, 5)))  # the same conv again: a second call site
    assert cbn.num_sites == 2 and cbn.num_iters == 1
    end_iteration()
    cbn(conv_b(torch.randn(2, 3, 5, 5)))  # another conv in another iteration is allowed


@pytest.mark.parametrize('case', ['shared_head', 'frozen_conv', 'accumulation'])
def test_burnin_counts_optimizer_steps(case):
    """num_iters and the burn-in follow optimizer steps, whatever the number of calls per step
    and whether anything the layer can watch is trainable."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    head = nn.Linear(4, 2)
    affine = case != 'frozen_conv'
    cbn = CBN(4, buffer_num=2, burnin_iters=3, affine=affine)
    if case == 'frozen_conv':
        conv.requires_grad_(False)  # nothing of the layer's own is trainable
    opt = torch.optim.SGD(list(head.parameters()) + [p for p in list(conv.parameters()) +
                                                     list(cbn.parameters())
                                                     if p.requires_grad], lr=0.01)
    calls = 2 if case != 'frozen_conv' else 3
    for step in range(1, 6):
        loss = 0
        for _ in range(calls):  # FPN levels or micro-batches: calls of one iteration
            z = torch.randn(2, 3, 5, 5, requires_grad=case == 'frozen_conv')
            loss = loss + head(cbn(conv(z)).mean((2, 3))).sum()
            assert cbn.window_active == (step > 3)
            if case == 'accumulation':
                loss.backward()
                loss = 0
        if case != 'accumulation':
            loss.backward()
        opt.step()
        opt.zero_grad()
        assert cbn.num_iters == step
    assert cbn.num_sites == calls and cbn.hist_len.tolist() == [2] * calls


# ------------------------------------------------------------------ item 4: clean saves
def test_checkpoint_after_a_nan_batch_is_finite_and_resumes_exactly():
    """Before: the window held NaN for buffer_num steps after a non-finite batch and every
    checkpoint in between carried it."""
    model = _trained('CBN', steps=3)
    with torch.no_grad():
        x = model[0](torch.randn(2, 3, 6, 6))
    x[:, :2, 1, 1] = math.nan  # channels 0 and 1 overflowed, say
    y = model[1](x)
    end_iteration()
    assert not torch.isfinite(y[:, :2]).any() and torch.isfinite(y[:, 2:]).all()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the once-per-type non-finite report
        state = model[1].state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    slot = (int(state['hist_ptr']) - 1) % 3
    valid = state['hist_valid'][0, slot]
    assert not valid[:2].any() and valid[2:].all()
    for name in ('hist_mean', 'hist_var', 'hist_mean_proj', 'hist_var_proj'):
        assert not state[name][0, slot, :2].any(), name  # zeros, their validity bit cleared
    # resuming from the clean checkpoint continues exactly as the run itself
    fresh = copy.deepcopy(model)
    fresh[1].load_state_dict(state)
    for seed in (7, 8, 9, 10):  # the window cycles through the bad entry
        assert torch.equal(_step(model, seed), _step(fresh, seed))


def test_window_of_an_older_version_gets_its_validity_mask():
    """Version 4 saved no mask (a skipped entry was NaN): loading derives it and zeroes the
    entry; training continues as if the mask had been saved."""
    model = _trained('CBN', steps=4)
    state = _snapshot(model[1])
    state['hist_mean'][0, 0, 3] = math.nan
    state['hist_var'][0, 0, 3] = math.nan
    legacy = {k: v for k, v in state.items() if k != 'hist_valid'}
    current = {k: v.clone() for k, v in state.items()}
    current['hist_valid'][0, 0, 3] = False
    for name in ('hist_mean', 'hist_var', 'hist_mean_proj', 'hist_var_proj'):
        current[name][0, 0, 3] = 0.0  # as the layer stores a skipped entry now
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    a[1].load_state_dict(legacy)  # strict: the mask is not required
    b[1].load_state_dict(current)
    for key, value in b[1].state_dict().items():
        assert torch.equal(a[1].state_dict()[key], value), key
    assert torch.equal(_step(a, 3), _step(b, 3))


# ------------------------------------------------------------------ item 5: warning keys
@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(reporting, '_warned', set())


def test_each_distinct_window_size_mismatch_is_reported(fresh_warnings):
    """Before: the key was the layer prefix, so a 5->3 load said nothing after a 3->5 load of
    the same layer name."""

    def load(src_k, dst_k):
        src = CBN(4, buffer_num=src_k)
        conv = nn.Conv2d(3, 4, 3)
        src(conv(torch.randn(2, 3, 5, 5)))
        end_iteration()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            nn.Sequential(CBN(4, buffer_num=dst_k)).load_state_dict(
                {'0.' + k: v for k, v in src.state_dict().items()})
        return [str(w.message) for w in caught if 'buffer_num' in str(w.message)]

    first = load(3, 5)
    assert len(first) == 1 and 'buffer_num=3, this layer has buffer_num=5' in first[0]
    assert first[0].startswith('0: ')  # the first layer it concerns
    second = load(5, 3)
    assert len(second) == 1 and 'buffer_num=5, this layer has buffer_num=3' in second[0]
    assert load(3, 5) == []  # the same mismatch again: said once


def test_each_distinct_mabn_window_size_is_reported(fresh_warnings):
    def load(src_k, dst_k):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            MABN(4, buffer_size=dst_k).load_state_dict(MABN(4, buffer_size=src_k).state_dict())
        return [str(w.message) for w in caught if 'buffer_size' in str(w.message)]

    assert len(load(4, 8)) == 1 and len(load(8, 4)) == 1 and load(4, 8) == []
