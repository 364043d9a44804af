"""CBN per-layer cost against nn.BatchNorm2d and an official-style CBN, printed as ratios.

Usage::

    OMP_NUM_THREADS=1 python tools/benchmarks/bench_cbn.py [--iters 3] [--shapes fpn roi]

Time and memory come from :func:`mmnorm_plugin.benchmarks.layer_benchmark.compare_norms` (norm cost inside
``Conv3x3 -> norm``; see its docstring). Two extra columns put the numbers in context:

* ``x layer``: fwd+bwd of ``Conv3x3 + norm`` against ``Conv3x3 + BN`` (a 3x3 conv's own
  fwd+bwd is measured as the candidate ``conv3x3``). CBN's exact ``∂ν/∂W`` is a weight-gradient
  convolution, so against BN's elementwise work alone the ratio is large by nature.
* ``x BN - floor``: the norm alone minus one weight-gradient convolution of the producing
  conv (timed as the candidate ``wgrad floor``), against BN: what CBN costs beyond the one
  operation its exact ``∂σ²/∂W`` cannot avoid.
* history: bytes of the cross-iteration state, ours (registered buffers minus BN's running
  statistics) against the official layout (Python lists holding ∂μ/∂W, ∂ν/∂W and a copy of W,
  three weight-sized tensors per past iteration).

``OfficialStyleCBN`` below restates the published algorithm (``Howal/Cross-iterationBatchNorm``)
for comparison only: two ``autograd.grad`` calls per forward and list-based history. It lives
here and nowhere in the package.
"""
import argparse
from typing import List

import torch
from torch import Tensor, nn

from mmnorm_plugin.norms.cbn import CBN
from torch.nn.grad import conv2d_weight

from mmnorm_plugin.norms.conv_origin import find_producing_conv
from mmnorm_plugin.benchmarks.layer_benchmark import (DETECTION_SHAPES, buffer_bytes, compare_norms,
                                           format_rows)

SHAPES = {'fpn': list(DETECTION_SHAPES[:2]), 'roi': [DETECTION_SHAPES[2]]}


class OfficialStyleCBN(nn.Module):
    """Straightforward CBN: lists of past (μ, E[x²], ∂μ/∂W, ∂E[x²]/∂W, W), autograd derivatives."""

    def __init__(self, num_features: int, buffer_num: int, eps: float = 1e-5, rho: float = 1.0):
        super().__init__()
        self.buffer_num, self.eps, self.rho = buffer_num, eps, rho
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.past: List[tuple] = []

    def history_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in self.past for t in entry)

    def forward(self, x: Tensor) -> Tensor:
        w = find_producing_conv(x).parameter  # the official layer receives it as an argument
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        mu, sq = flat.mean(1), (flat * flat).mean(1)
        ones = torch.ones_like(mu)
        d_mu = torch.autograd.grad(mu, w, ones, retain_graph=True)[0]
        d_sq = torch.autograd.grad(sq, w, ones, retain_graph=True)[0]
        w_now = w.detach()
        mus, sqs = [mu], [sq]
        for p_mu, p_sq, p_dmu, p_dsq, p_w in self.past:
            delta = w_now - p_w
            mus.append(p_mu + self.rho * (p_dmu * delta).flatten(1).sum(1))
            sqs.append(p_sq + self.rho * (p_dsq * delta).flatten(1).sum(1))
        mus, sqs = torch.stack(mus), torch.stack(sqs)
        valid = (sqs - mus * mus >= 0).to(mus.dtype)
        count = valid.sum(0)
        mean = (mus * valid).sum(0) / count
        var = (sqs * valid).sum(0) / count - mean * mean
        entry = (mu.detach(), sq.detach(), d_mu.detach(), d_sq.detach(), w_now.clone())
        self.past = [entry] + self.past[:self.buffer_num - 1]
        scale = self.weight / (var.sqrt() + self.eps)
        return x * scale.view(1, -1, 1, 1) + (self.bias - mean * scale).view(1, -1, 1, 1)


class WeightGradientFloor(nn.Module):
    """Identity that runs one weight-gradient conv of the producing conv: CBN's floor."""

    def forward(self, x: Tensor) -> Tensor:
        o = find_producing_conv(x)
        conv2d_weight(o.input, o.weight.shape, x.detach(), o.stride, o.padding, o.dilation,
                      o.groups)
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shapes', nargs='+', choices=sorted(SHAPES), default=['fpn', 'roi'])
    parser.add_argument('--buffer-nums', type=int, nargs='+', default=[3, 7])
    parser.add_argument('--iters', type=int, default=3, help='timed iterations per block')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    made = {}

    def keep(name, make):
        def factory(c):
            made.setdefault(name, []).append(make(c))
            return made[name][-1]
        return factory

    candidates = {'BN': keep('BN', nn.BatchNorm2d),
                  'conv3x3': keep('conv3x3', lambda c: nn.Conv2d(c, c, 3, padding=1, bias=False)),
                  'wgrad floor': keep('wgrad floor', lambda c: WeightGradientFloor())}
    for k in args.buffer_nums:
        candidates[f'CBN k={k}'] = keep(f'CBN k={k}', lambda c, k=k: CBN(c, buffer_num=k))
        candidates[f'official k={k}'] = keep(f'official k={k}',
                                             lambda c, k=k: OfficialStyleCBN(c, k))
    shapes = [s for name in args.shapes for s in SHAPES[name]]
    # warm-up fills every window before timing
    rows = compare_norms(candidates, shapes, baseline='BN', warmup=max(args.buffer_nums) + 1,
                         iters=args.iters)
    print(format_rows(rows))

    print('\nper layer (Conv3x3 + norm) fwd+bwd vs Conv3x3 + BN, and history memory')
    header = (f'{"shape (N,C,H,W)":<22}{"norm":<16}{"x layer":>9}{"x BN - floor":>14}'
              f'{"history MB":>12}{"official MB":>13}{"x official":>12}')
    print(header + '\n' + '-' * len(header))
    by_key = {(r['shape'], r['name']): r for r in rows}
    for i, shape in enumerate(shapes):
        conv_ms = by_key[(shape, 'conv3x3')]['ms']
        bn_layer = conv_ms + by_key[(shape, 'BN')]['ms']
        for k in args.buffer_nums:
            for name in (f'CBN k={k}', f'official k={k}'):
                layer = (conv_ms + by_key[(shape, name)]['ms']) / bn_layer
                beyond = ((by_key[(shape, name)]['ms'] - by_key[(shape, 'wgrad floor')]['ms'])
                          / by_key[(shape, 'BN')]['ms'])
                module = made[name][i]
                if isinstance(module, CBN):
                    history = buffer_bytes(module) - buffer_bytes(made['BN'][i])
                    official = made[f'official k={k}'][i].history_bytes()
                    mem = (f'{history / 2**20:>12.2f}{official / 2**20:>13.2f}'
                           f'{history / official:>12.2f}')
                else:
                    mem = f'{module.history_bytes() / 2**20:>12.2f}{"":>13}{"":>12}'
                print(f'{str(shape):<22}{name:<16}{layer:>9.2f}{beyond:>14.2f}{mem}')


if __name__ == '__main__':
    main()
