r"""BKN's prior: the statistics of a layer's input predicted from the previous BKN layers.

A BKN layer fuses its batch statistics with a *prediction* propagated from the previous BKN
layer through the transition to this one (:class:`~mmnorm_plugin.norms.bkn.BKN`). This module
holds how that prediction is made: the per-channel Gaussian state a BKN layer publishes, the
transforms of it the chain understands, and its propagation through the producing conv.

The prior of a conv (``prior_mode``)
------------------------------------
Official: draw ONE synthetic map ``ReLU(m + sqrt(v) * xi)`` of the
  conv input's size, run it through the same conv, take its spatial moments (``'sample'``).
  Default ``'closed_form'``: the expectation that sampling estimates, computed exactly. For an
  input whose elements are independent with per-channel mean :math:`E_c` and variance
  :math:`V_c` (moments of the rectified Gaussian
  :math:`E[\mathrm{relu}\,X] = m\Phi(a) + s\varphi(a)`,
  :math:`E[\mathrm{relu}\,X^2] = (m^2+v)\Phi(a) + m s\varphi(a)`, :math:`s=\sqrt v, a=m/s`), the
  conv output at position ``q`` has mean :math:`\sum_t \mathbb 1_{qt} A_{ot} + b_o` and variance
  :math:`\sum_t \mathbb 1_{qt} B_{ot}`, with :math:`A_{ot} = \sum_c W_{oct} E_c`,
  :math:`B_{ot} = \sum_c W^2_{oct} V_c`, ``t`` a kernel tap and :math:`\mathbb 1_{qt}` whether
  the tap reads inside the (zero-padded) input. Averaging over positions (law of total variance,
  zero padding included exactly as in the sampled map):
  :math:`\hat\mu = f^\top A_o + b_o`,
  :math:`\hat\sigma^2 = f^\top B_o + A_o^\top G A_o - (f^\top A_o)^2`, with
  :math:`f_t = \mathrm{mean}_q \mathbb 1_{qt}` and :math:`G_{tt'} = \mathrm{mean}_q \mathbb
  1_{qt}\mathbb 1_{qt'}` (separable in height and width). Cost: two small GEMMs over the
  weight per layer (``O*C*k^4`` flops), independent of the image size; deterministic
  (resume-exact); no sampling noise on top of the micro-batch noise the method is meant to
  remove. The paper describes the prior as the moments of the propagated distribution; the
  sample is only the official estimator of it.

How the chain of layers is found (no change to any mmdet module)
------------------------------------------------------------------
``norm_cfg`` layers are called as ``norm(conv(a))`` and never see the previous layer. Each BKN
therefore (1) finds its producing conv with :func:`~.conv_origin.producing_conv`, (2) walks
the autograd graph backwards from the conv's input ``a``, and (3) reads the state that earlier
BKN layers *attached to the autograd node of their own output* (``grad_fn.metadata``).
The state lives on the graph of the current forward and dies with it: there is no per-module
"previous layer" slot and no hook, so nothing needs resetting between forwards, two models (or
two forwards, e.g. teacher/student) never see each other's state, and the state handed over is
always the one of the exact tensor the conv reads (in eager mode; a compiled forward replays
the recorded chain instead, see the ``torch.compile`` caveat). The walk understands only
operations whose effect on a per-channel Gaussian state is known exactly (or by the official
approximation):

* ``ReLU`` (also in-place): the state becomes a rectified Gaussian;
* ``a + b`` (residual merge): means and variances add (independence, as the official code's
  block-output state = input state + last conv's statistics). In mmdet's post-activation
  ``Bottleneck`` the next conv reads ``relu(bn3(..) + identity)``: the sum of ``bn3``'s state
  and the identity's state (the previous block output, a rectified Gaussian, or the
  ``downsample`` BKN's state) is treated as Gaussian and rectified again;
* nearest upsampling by an integer factor (FPN top-down path): moments are unchanged.

Anything else (max-pooling in the ResNet stem, RoIAlign before the heads, an interpolation by a
non-integer factor, a norm that is not BKN, an input without autograd history) ends the chain:
the next BKN starts a new one as plain BN. Rationale: with ``p = 0.9`` the prior dominates the
estimate, so an unmodelled transform would mis-normalize silently; BN is the safe fallback.
Consequences in Faster/Mask R-CNN R50-FPN: the stem ``bn1`` and the first convs of ``layer1``
(after max-pool) start chains; the backbone then forms one chain through all residual blocks;
FPN lateral convs continue from the stage outputs, the FPN output convs from the top-down sums;
the RoI heads' first conv starts a new chain (RoIAlign) and the next three continue it. The
walk is memoised on the graph nodes, so its cost per layer is a handful of node visits.
"""
import functools
import math
from typing import Any, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['GaussianState', 'rectified_gaussian_moments', 'predict_conv_moments',
           'sample_conv_moments', 'walk_chain', 'replay_chain', 'STATE_KEY']

# Key under which a BKN publishes (state, layer) on the autograd node of its output; other
# visited nodes cache their derived (state, chain) (or (None, None)) under the same key.
STATE_KEY = 'mmnorm_bkn_state'
_MAX_WALK_DEPTH = 64


class GaussianState(NamedTuple):
    """Per-channel distribution of a tensor: ``N(mean, var)``, or ``relu`` of it."""
    mean: Tensor
    var: Tensor
    rectified: bool = False

    def moments(self) -> Tuple[Tensor, Tensor]:
        if self.rectified:
            return rectified_gaussian_moments(self.mean, self.var)
        return self.mean, self.var


def rectified_gaussian_moments(mean: Tensor, var: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean and variance of ``relu(X)`` for ``X ~ N(mean, var)``, elementwise, differentiable."""
    return _RectifiedGaussianMoments.apply(mean, var)


class _RectifiedGaussianMoments(torch.autograd.Function):
    r"""Rectified-Gaussian moments with a closed-form backward.

    With :math:`s = \sqrt{v}`, :math:`a = m/s`, :math:`\Phi, \varphi` the standard normal cdf
    and pdf: :math:`m_1 = m\Phi(a) + s\varphi(a)`, :math:`m_2 = (m^2+v)\Phi(a) + m s\varphi(a)`,
    output :math:`(m_1, m_2 - m_1^2)`. Derivatives: :math:`\partial m_1/\partial m = \Phi`,
    :math:`\partial m_1/\partial v = \varphi/(2s)`, :math:`\partial m_2/\partial m = 2m_1`,
    :math:`\partial m_2/\partial v = \Phi`. Autograd through the composite records ~70 small
    ops per layer and iteration in backward; this records one node.
    """

    @staticmethod
    def forward(ctx, mean: Tensor, var: Tensor):
        # a floor on the std keeps a = m/s finite for a degenerate channel (var == 0 gives
        # relu(m) exactly in the limit)
        positive = var >= 0
        std = var.clamp_min(0).add(torch.finfo(var.dtype).tiny).sqrt()
        a = mean / std
        cdf = torch.special.ndtr(a)
        pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        first = mean * cdf + std * pdf
        second = (mean * mean + var) * cdf + mean * std * pdf
        out_var = second - first * first
        ctx.save_for_backward(std, cdf, pdf, first, positive, out_var >= 0)
        return first, out_var.clamp_min(0)

    @staticmethod
    def backward(ctx, grad_first: Tensor, grad_var: Tensor):
        std, cdf, pdf, first, positive, var_kept = ctx.saved_tensors
        d1_dv = torch.where(positive, pdf / (2 * std), 0.0)
        g_v = grad_var * var_kept  # clamp_min(0) passes the gradient where it did not clamp
        # m2 - m1^2: d/dm = 2 m1 (1 - Phi), d/dv = Phi - 2 m1 dm1/dv
        grad_mean = grad_first * cdf + g_v * (2 * first * (1 - cdf))
        grad_v = grad_first * d1_dv + g_v * (cdf - 2 * first * d1_dv)
        return grad_mean, grad_v


def _tap_fractions(in_size: int, out_size: int, kernel: int, stride: int, padding: int,
                   dilation: int, device, dtype) -> Tuple[Tensor, Tensor]:
    """f[t] = fraction of output positions where tap t reads inside the input; G[t, t'] the same
    for taps t and t' together (one spatial axis)."""
    pos = torch.arange(out_size, device=device).view(1, -1) * stride - padding
    reads = pos + torch.arange(kernel, device=device).view(-1, 1) * dilation
    valid = ((reads >= 0) & (reads < in_size)).to(dtype)  # (kernel, out_size)
    return valid.mean(1), valid @ valid.t() / out_size


@functools.lru_cache(maxsize=1024)
def _conv_geometry(h: int, w: int, kh: int, kw: int, stride: Tuple[int, int],
                   padding: Tuple[int, int], dilation: Tuple[int, int], device,
                   dtype) -> Tuple[Tensor, Tensor, Tensor, bool]:
    """``(f, G, I_T, all_valid)`` of a conv geometry, taps flattened (``f``: (T,), ``G``:
    (T, T) = G_h (x) G_w): a pure function of integers, so it is computed once per shape instead
    of per layer and iteration (a dozen small ops each). The tensors are shared: read them, never
    write them. ``all_valid``: every tap reads inside the input at every output position (no
    padding), where f = 1 and ``G = f f^T`` make the variance's last two terms cancel exactly."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f'conv geometry gives an empty output for input size {(h, w)}')
    f_h, g_h = _tap_fractions(h, out_h, kh, sh, ph, dh, device, dtype)
    f_w, g_w = _tap_fractions(w, out_w, kw, sw, pw, dw, device, dtype)
    # without padding the output-size formula keeps every read inside the input
    all_valid = ph == 0 and pw == 0
    return (torch.outer(f_h, f_w).reshape(-1), torch.kron(g_h, g_w),
            torch.eye(kh * kw, dtype=dtype, device=device), all_valid)


def predict_conv_moments(state: GaussianState, weight: Tensor, bias: Optional[Tensor],
                         in_size: Tuple[int, int], stride: Tuple[int, int],
                         padding: Tuple[int, int], dilation: Tuple[int, int],
                         groups: int) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and variance over positions of ``conv2d(a, weight, bias, ...)`` for a
    zero-padded input ``a`` of spatial size ``in_size`` whose elements are independent and
    distributed per channel as ``state`` (exact under that assumption; see the module doc)."""
    out_ch, in_per_group, kh, kw = weight.shape
    dt = weight.dtype
    # cached across calls: computed in the key's dtype even under autocast (whose matmuls would
    # otherwise cache bf16 tensors under a float32 key)
    # (compiled: the geometry is folded into the graph once, the cache is for eager calls)
    geometry = _conv_geometry.__wrapped__ if torch.compiler.is_compiling() else _conv_geometry
    with torch.autocast(weight.device.type, enabled=False):
        f, g, eye, all_valid = geometry(
            int(in_size[0]), int(in_size[1]), kh, kw, tuple(stride), tuple(padding),
            tuple(dilation), weight.device, dt)
    e_in, v_in = state.moments()
    # A[o, t] = sum_c W[o, c, t] E[c] as one GEMM per group against the (C*T, T) matrix
    # E (x) I_T: BLAS in forward and backward, where a broadcast product over the full weight
    # costs several elementwise passes (measured ~5x slower on CPU for 512x512x3x3)
    taps = kh * kw
    w_mat = weight.reshape(groups, out_ch // groups, in_per_group * taps)

    def contract(w: Tensor, vec: Tensor) -> Tensor:
        vec = vec.to(dt).view(groups, in_per_group, 1)
        rhs = vec if taps == 1 else (vec.unsqueeze(-1) * eye).reshape(
            groups, in_per_group * taps, taps)
        return torch.bmm(w, rhs).reshape(out_ch, taps)

    a = contract(w_mat, e_in)
    b = contract(w_mat.square(), v_in)
    if all_valid:  # f = 1, G = 1 1^T: mean = sum_t A, var = sum_t B
        mean, var = (a.view(out_ch), b.view(out_ch)) if taps == 1 else (a.sum(1), b.sum(1))
    else:
        mean = a @ f
        # f^T B + A^T G A - (f^T A)^2, per output channel
        var = torch.addcmul(b @ f, mean, mean, value=-1) + ((a @ g) * a).sum(1)
    if bias is not None:
        mean = mean + bias.to(dt)
    return mean, var.clamp_min(0)


def sample_conv_moments(state: GaussianState, weight: Tensor, bias: Optional[Tensor],
                         in_size: Tuple[int, int], stride, padding, dilation,
                         groups: int) -> Tuple[Tensor, Tensor]:
    """Official estimator: moments of one synthetic map drawn from ``state`` through the conv."""
    dt = weight.dtype
    mean, var = state.mean.to(dt), state.var.to(dt)
    noise = torch.randn((1, mean.numel()) + tuple(in_size), device=weight.device, dtype=dt)
    a = mean.view(1, -1, 1, 1) + var.clamp_min(0).sqrt().view(1, -1, 1, 1) * noise
    if state.rectified:
        a = F.relu(a)
    out = F.conv2d(a, weight, None if bias is None else bias.to(dt), stride, padding, dilation,
                   groups)
    var_out, mean_out = torch.var_mean(out, dim=(0, 2, 3), unbiased=False)
    return mean_out, var_out


def _combine(op: str, parts) -> Optional[GaussianState]:
    """The state after ``op`` of the states ``parts`` (None if unknown): ``'relu'`` rectifies,
    ``'add'`` sums means and variances (independence), ``'upsample'`` (nearest, integer
    factor) keeps the moments. The one place these rules live: the autograd walk
    (:func:`walk_chain`) and the replay of a recorded chain (:func:`replay_chain`) both use it."""
    if any(p is None for p in parts):
        return None
    if op == 'relu':
        return GaussianState(parts[0].mean, parts[0].var, True)
    if op == 'add':
        (m1, v1), (m2, v2) = parts[0].moments(), parts[1].moments()
        return GaussianState(m1 + m2, v1 + v2, False) if m1.shape == m2.shape else None
    return parts[0]  # 'upsample'


def walk_chain(node, depth: int = 0) -> Tuple[Optional[GaussianState], Any]:
    """Gaussian state of the tensor produced by autograd ``node`` (None if unknown), and its
    *chain*: how it derives from BKN outputs, ``('bkn', layer)`` or ``(op, *chains)``, which a
    compiled forward replays (:func:`replay_chain`) where the autograd graph cannot be read."""
    if node is None or depth > _MAX_WALK_DEPTH:
        return None, None
    meta = node.metadata
    if STATE_KEY in meta:
        return meta[STATE_KEY]
    name = type(node).__name__
    op, children = None, []
    if name == 'ReluBackward0':
        op, children = 'relu', [node.next_functions[0][0]]
    elif name == 'AddBackward0' and node._saved_alpha == 1 and len(node.next_functions) == 2:
        op, children = 'add', [fn for fn, _ in node.next_functions]
    elif name == 'UpsampleNearest2DBackward0':
        in_h, in_w = node._saved_self_sym_sizes[-2:]
        out_h, out_w = node._saved_output_size
        if out_h % in_h == 0 and out_w % in_w == 0:  # pure replication: moments unchanged
            op, children = 'upsample', [node.next_functions[0][0]]
    result = None, None
    if op is not None:
        walked = [walk_chain(child, depth + 1) for child in children]
        state = _combine(op, [w[0] for w in walked])
        if state is not None:
            result = state, (op, ) + tuple(w[1] for w in walked)
    meta[STATE_KEY] = result
    return result


def replay_chain(chain) -> Optional[GaussianState]:
    """The state a recorded chain gives from the states the BKN layers published in this
    forward (traceable: no autograd graph)."""
    if chain is None:
        return None
    if chain[0] == 'bkn':
        return chain[1]._published
    return _combine(chain[0], [replay_chain(c) for c in chain[1:]])
