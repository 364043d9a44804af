"""Compare two versions of the CBN layer step by step on one fixed training sequence.

    python tools/misc/compare_cbn_versions.py --old 4d3938b --new a17ef33 [--dtype float64]
    python tools/misc/compare_cbn_versions.py --old a17ef33            # vs this checkout
    python tools/misc/compare_cbn_versions.py --old 4d3938b --burnin 3 --json out.json
    python tools/misc/compare_cbn_versions.py --old 4d3938b --new a17ef33 --detector 100

Each version (a git revision, or ``WORKTREE``: this checkout as it is) runs in its own process
with its own ``mmnorm_plugin`` on ``sys.path`` (``git archive REV mmnorm_plugin`` into a
temporary directory), so both register ``CBN`` without clashing and nothing of one version
leaks into the other. Both get the same inputs, written once by this process: initial
parameters and, per step, the input image, the upstream gradient of every output and an
evaluation image. docs/cbn_trajectory.md is what this found.

The network mirrors how CBN sits in a detector: ``conv -> CBN`` twice (the second conv grouped,
so the grouped derivative path runs) and a head ``conv -> CBN`` shared by both feature maps (two
call sites per iteration, like an FPN head). Each step is a training iteration as mmengine runs
it: forward in train mode, ``OptimWrapper.update_params`` (backward, SGD with momentum and weight
decay and gradient clipping as in the norm_sweep runtime, ``zero_grad``), so each version finds
where an iteration ends its own way (4d3938b: the conv weight's version counter; a17ef33 on:
the optimizer's step hook). ``--burnin`` sets ``burnin_iters`` on every layer before the first
step, as ``CBNBurnInHook`` does; ``--eval-every`` runs an evaluation forward between steps, as
a validation loop would.

Recorded per step and compared: CBN outputs (``out``), gradients w.r.t. each CBN input
(``grad_in``), parameter gradients (``grad_param``), parameters after the step (``param``),
running statistics (``running``), the windows (``window``: ``hist_*`` of the state dict),
counters (``counter``: ``num_iters``, ``hist_len``, ``hist_ptr``, ... compared exactly) and
evaluation outputs (``eval``). Per category: the largest absolute difference and the largest
normwise relative difference ``max|a - b| / max(max|a|, max|b|)`` over its tensors.

``--detector ITERS`` trains the norm_sweep arm of a record (default: the CBN@1 seed-0 rerun)
with each version's own ``configs/`` instead and compares the logged losses, the CBN counters
and parameter snapshots per iteration. ``--align-reductions`` (diagnostic) makes the new side
reduce over the filled window slots only, as 4d3938b did (:func:`align_window_reductions`);
``--norm BN --perturb-ulp`` is the control: how far a one-ulp difference carries in the same
training without CBN.
"""
import argparse
import json
import math
import os
import os.path as osp
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
WORKTREE = 'WORKTREE'
CATEGORIES = ('out', 'grad_in', 'grad_param', 'param', 'running', 'window', 'counter', 'eval')
_COUNTER_KEYS = ('num_iters', 'num_batches_tracked', 'hist_len', 'hist_ptr', 'hist_count')
_LAYERS = ('cbn_a', 'cbn_b', 'cbn_h')
DETECTOR_CONFIG = 'configs/norm_sweep/faster-rcnn_r18-w16_fpn_bn_scratch_photo-digits.py'
DETECTOR_RECORD = osp.join(ROOT, 'docs', 'norm_sweep_repro_a17ef33', 'CBN@1_seed0.json')


# ------------------------------------------------------------------------------ inputs
def make_inputs(steps: int = 12, seed: int = 0, size: int = 24, channels: int = 8,
                batch: int = 1) -> Dict:
    """The fixed sequence both versions are fed: initial parameters and per-step tensors
    (float64, cast by each worker to the compared dtype)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    c = channels
    params = {
        'conv_a.weight': randn(c, 3, 3, 3, scale=(2 / 27)**0.5),
        'conv_b.weight': randn(c, c // 2, 3, 3, scale=(2 / (9 * c / 2))**0.5),
        'conv_h.weight': randn(c, c, 3, 3, scale=(2 / (9 * c))**0.5),
    }
    for name in _LAYERS:
        params[f'{name}.weight'] = 1 + randn(c, scale=0.1)
        params[f'{name}.bias'] = randn(c, scale=0.1)
    half = (size + 1) // 2
    seq = []
    for _ in range(steps):
        # per-image offsets and scales, so that batch statistics move from step to step
        x = randn(batch, 3, size, size) * (1 + randn(batch, 3, 1, 1, scale=0.3).abs()) \
            + randn(batch, 3, 1, 1, scale=0.5)
        seq.append(dict(
            x=x, x_eval=randn(batch, 3, size, size),
            g_a=randn(batch, c, size, size), g_b=randn(batch, c, half, half),
            g_h0=randn(batch, c, size, size), g_h1=randn(batch, c, half, half)))
    return dict(params=params, steps=seq)


# ------------------------------------------------------------------------------ the layer test
def _build(cbn_cls, params: Dict, dtype: torch.dtype, burnin: int, channels: int,
           buffer_num: int):
    c = channels
    nn = torch.nn
    net = nn.Module()
    net.conv_a = nn.Conv2d(3, c, 3, padding=1, bias=False)
    net.conv_b = nn.Conv2d(c, c, 3, stride=2, padding=1, groups=2, bias=False)
    net.conv_h = nn.Conv2d(c, c, 3, padding=1, bias=False)
    for name in _LAYERS:
        setattr(net, name, cbn_cls(c, buffer_num=buffer_num))
    net.to(dtype)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name].to(dtype))
    for name in _LAYERS:  # as CBNBurnInHook.before_train does
        getattr(net, name).burnin_iters = burnin
    return net


def _forward(net, x: torch.Tensor, keep: Optional[Dict] = None):
    relu = torch.nn.functional.relu
    za = net.conv_a(x)
    ya = net.cbn_a(za)
    zb = net.conv_b(relu(ya))
    yb = net.cbn_b(zb)
    zh0 = net.conv_h(relu(ya))
    yh0 = net.cbn_h(zh0)  # the shared head: call site 0
    zh1 = net.conv_h(relu(yb))
    yh1 = net.cbn_h(zh1)  # call site 1
    if keep is not None:
        for name, z in (('cbn_a', za), ('cbn_b', zb), ('cbn_h.0', zh0), ('cbn_h.1', zh1)):
            z.retain_grad()
            keep[name] = z
    return dict(a=ya, b=yb, h0=yh0, h1=yh1)


def run_version(inputs: Dict, dtype: torch.dtype = torch.float32, burnin: int = 0,
                lr: float = 0.02, eval_every: int = 4, buffer_num: int = 3,
                cbn_cls=None) -> List[Dict[str, torch.Tensor]]:
    """Train the network with the ``mmnorm_plugin`` that is importable in this process (its
    ``CBN``, or ``cbn_cls``); return one dict of named tensors per step (see the module
    docstring for the names)."""
    from mmengine.optim import OptimWrapper

    if cbn_cls is None:
        from mmnorm_plugin.norms.cbn import CBN as cbn_cls
    channels = inputs['params']['conv_a.weight'].shape[0]
    net = _build(cbn_cls, inputs['params'], dtype, burnin, channels, buffer_num)
    net.train()
    # the norm_sweep runtime's optimizer (SGD, momentum 0.9, weight decay 1e-4, clip 35)
    wrapper = OptimWrapper(
        torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4),
        clip_grad=dict(max_norm=35, norm_type=2))
    trace = []
    for step, data in enumerate(inputs['steps'], 1):
        rec: Dict[str, torch.Tensor] = {}
        keep: Dict[str, torch.Tensor] = {}
        outs = _forward(net, data['x'].to(dtype), keep)
        loss = sum((y * data[f'g_{k}'].to(dtype)).sum() for k, y in outs.items())
        for k, y in outs.items():
            rec[f'out/{k}'] = y.detach().clone()
        # OptimWrapper.update_params, spelled out so that the gradients can be read before
        # zero_grad (no accumulation: should_update is always true)
        wrapper.backward(wrapper.scale_loss(loss))
        for k, z in keep.items():
            rec[f'grad_in/{k}'] = z.grad.detach().clone()
        for k, p in net.named_parameters():
            rec[f'grad_param/{k}'] = p.grad.detach().clone()
        if wrapper.should_update():
            wrapper.step()
            wrapper.zero_grad()
        for k, p in net.named_parameters():
            rec[f'param/{k}'] = p.detach().clone()
        for layer in _LAYERS:
            for k, v in getattr(net, layer).state_dict().items():
                leaf = k.rsplit('.', 1)[-1]
                cat = ('counter' if leaf in _COUNTER_KEYS else
                       'running' if leaf.startswith('running_') else 'window')
                rec[f'{cat}/{layer}.{k}'] = v.detach().clone()
        if eval_every and step % eval_every == 0:
            net.eval()
            with torch.no_grad():
                for k, y in _forward(net, data['x_eval'].to(dtype)).items():
                    rec[f'eval/{k}'] = y.clone()
            net.train()
        trace.append(rec)
    return trace


# ------------------------------------------------------------------------------ detector
class _Stop(Exception):
    pass


def run_detector(config: str, options: Dict, iters: int, work_dir: str,
                 snapshots=(1, 2, 3, 5, 10, 20, 50), norm: Optional[str] = None,
                 perturb_ulp: bool = False) -> Dict:
    """Train the detector of ``config`` + ``options`` (a norm_sweep record's) for ``iters``
    iterations with the ``mmnorm_plugin`` importable in this process (mmengine's Runner, as
    ``tools/train.py`` builds it); return per iteration the logged losses (full precision) and
    every CBN's counters, and the parameters after the iterations in ``snapshots``.

    ``norm`` replaces the type of every ``norm_cfg`` the options set (a control arm, e.g.
    ``'BN'``); ``perturb_ulp`` moves the first entry of the model's first parameter up by one
    unit in the last place before the first iteration (how far a rounding-sized difference
    carries in this training, whatever the norm)."""
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from mmnorm_plugin.norms.cbn import CBN
    cfg = Config.fromfile(config)
    if norm is not None:
        options = {k: (dict(v, type=norm) if k.endswith('.norm_cfg') else v)
                   for k, v in options.items()}
    cfg.merge_from_dict(options)
    cfg.work_dir = work_dir
    snapshots = set(snapshots) | {iters}
    out = dict(losses=[], counters=[], params={})

    class Record(Hook):
        def before_train(self, runner):
            if perturb_ulp:
                first = next(runner.model.parameters()).data.view(-1)
                first[0] = torch.nextafter(first[0], first.new_tensor(math.inf))

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            model = runner.model
            out['losses'].append({k: float(torch.as_tensor(v).detach())
                                  for k, v in outputs.items()})
            out['counters'].append({
                f'{name}.{key}': value.clone()
                for name, m in model.named_modules() if isinstance(m, CBN)
                for key, value in m.state_dict().items()
                if key in ('num_iters', 'num_batches_tracked', 'hist_len', 'hist_ptr')})
            step = runner.iter + 1
            if step in snapshots:
                out['params'][step] = {k: p.detach().clone()
                                       for k, p in model.named_parameters()}
            if step >= iters:
                raise _Stop

    runner = Runner.from_cfg(cfg)
    runner.register_hook(Record(), priority='LOWEST')  # before_train: after the weight init
    try:
        runner.train()
    except _Stop:
        pass
    return out


# ------------------------------------------------------------------------------ diagnostic
def align_window_reductions(cbn_cls) -> None:
    """Make a CBN of commit a17ef33's layout reduce over the *filled* window slots only, as
    commit 4d3938b did (a diagnostic for ``--align-reductions``, applied in the worker process).

    From a17ef33 on, ``_projections`` (``⟨∂μ_τ/∂W, W_t⟩`` and ``⟨∂σ²_τ/∂W, W_t⟩``, a ``bmm``)
    and ``_compensation_grad_terms`` (a ``matmul`` over the window) run over all ``k`` slots,
    unfilled ones masked, so that shapes never depend on the fill level (``torch.compile``);
    4d3938b sliced them to the ``n`` filled slots. Same values, other BLAS kernels (``n = 1`` is
    a matrix-vector product), so other rounding. With this patch both versions run the same
    kernels on the same shapes.
    """
    import inspect
    want = {'_projections': ['self', 'weight', 'site'],
            '_compensation_grad_terms': ['self', 'site', 'valid', 'mean_bar', 'share']}
    for name, params in want.items():
        got = list(inspect.signature(getattr(cbn_cls, name)).parameters)
        if got != params:
            raise SystemExit(f'--align-reductions: CBN.{name}{tuple(got)} is not the layout of '
                             'a17ef33 this diagnostic patches')

    def projections(self, weight, site):
        n, k = int(self.hist_len[site]), self.buffer_num  # (a host read: diagnostic only)
        d_mean = self.hist_mean_grad[site, :, :n]
        d_var = self.hist_var_grad[site, :, :n]
        c, p = weight.shape
        g = d_mean.shape[0]
        mean_proj = torch.bmm(weight.reshape(g, c // g, p), d_mean.transpose(1, 2))
        var_proj = torch.bmm(d_var, weight.reshape(c, p, 1))
        pad = weight.new_zeros(k - n, c)  # unfilled slots: masked by hist_valid
        return (torch.cat((mean_proj.reshape(c, n).t(), pad)),
                torch.cat((var_proj.reshape(c, n).t(), pad)))

    def grad_terms(self, site, valid, mean_bar, share):
        n = int(self.hist_len[site])
        d_mean = self.hist_mean_grad[site, :, :n]
        d_var = self.hist_var_grad[site, :, :n]
        g, c = d_mean.shape[0], d_var.shape[0]
        valid = valid[:n]
        v = valid.to(d_var.dtype).t()
        if share is not None:
            v = v * share[:n].to(v.dtype)
        centred = v * 2 * (self.hist_mean[site, :n].t() - mean_bar[:, None])
        centred = torch.where(valid.t(), centred, 0.0)
        coeffs = torch.stack((v, centred))
        a, e = torch.matmul(coeffs.reshape(2, g, c // g, n), d_mean).reshape(2, c, -1).unbind(0)
        return a, e + torch.bmm(v.unsqueeze(1), d_var).squeeze(1)

    cbn_cls._projections = projections
    cbn_cls._compensation_grad_terms = grad_terms


# ------------------------------------------------------------------------------ workers
def _import_version(args) -> str:
    """Import the ``mmnorm_plugin`` under ``args.root`` (and patch it if asked)."""
    sys.path.insert(0, args.root)
    import mmnorm_plugin
    where = osp.realpath(mmnorm_plugin.__file__)
    if not where.startswith(osp.realpath(args.root) + os.sep):
        raise SystemExit(f'imported {where}, not the version under {args.root}')
    if args.align_reductions:
        from mmnorm_plugin.norms.cbn import CBN
        align_window_reductions(CBN)
    torch.set_num_threads(1)
    return where


def _worker(args) -> None:
    """The body of one side: run the layer test or the detector, save what it recorded."""
    where = _import_version(args)
    if args.detector:
        with open(args.options) as f:
            options = json.load(f)['options']
        snapshots = [int(i) for i in args.snapshots.split(',')]
        result = run_detector(args.config, options, args.detector, args.work_dir, snapshots,
                              args.norm, args.perturb_ulp)
    else:
        inputs = torch.load(args.inputs, weights_only=True)
        result = dict(trace=run_version(inputs, getattr(torch, args.dtype), args.burnin,
                                        args.lr, args.eval_every, args.buffer_num))
    result['module'] = where
    torch.save(result, args.out)


# ------------------------------------------------------------------------------ driver
def materialize(rev: str, dest: str, paths=('mmnorm_plugin', )) -> str:
    """A directory holding ``paths`` (``mmnorm_plugin``, ...) as they are at ``rev`` (this
    checkout as it is for ``WORKTREE``)."""
    if rev == WORKTREE:
        return ROOT
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.run(['git', '-C', ROOT, 'archive', rev, *paths], check=True,
                             capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', dest], input=archive, check=True)
    return dest


def _run_sides(old: str, new: str, tmp: str, worker_args: List[str], paths=('mmnorm_plugin', ),
               new_args: Sequence[str] = ()) -> List[Dict]:
    """Run the worker once per version, each in its own process with its own package on
    ``sys.path`` (one thread, as the studies train), ``new_args`` on the new side only; return
    what each recorded."""
    results = []
    for side, rev in (('old', old), ('new', new)):
        root = materialize(rev, osp.join(tmp, side), paths)
        if root != ROOT and 'configs' in paths:
            os.symlink(osp.join(ROOT, 'data'), osp.join(root, 'data'))
        out = osp.join(tmp, f'{side}.pt')
        env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=root)
        cmd = [sys.executable, osp.abspath(__file__), '--worker', '--root', root, '--out', out,
               '--work-dir', osp.join(tmp, f'{side}_work'), *worker_args]
        if side == 'new':
            cmd += list(new_args)
        subprocess.run(cmd, check=True, env=env, cwd=root)
        results.append(torch.load(out, weights_only=True))
    return results


def _diff(a: torch.Tensor, b: torch.Tensor):
    """``(max |a - b|, max |a - b| / max(max |a|, max |b|))``; for integer and bool tensors
    the number of differing entries (twice)."""
    if a.shape != b.shape:
        return float('inf'), float('inf')
    if a.dtype == torch.bool or not a.is_floating_point():
        d = float((a.long() != b.long()).sum())
        return d, d
    if not a.numel():
        return 0.0, 0.0
    a64, b64 = a.double(), b.double()
    abs_diff = float((a64 - b64).abs().max())
    scale = max(float(a64.abs().max()), float(b64.abs().max()))
    return abs_diff, (abs_diff / scale if scale > 0 else abs_diff)


def compare_traces(old: List[Dict], new: List[Dict]) -> Dict:
    """Per step and category: ``(max abs diff, max normwise rel diff, bit-identical)``; the
    names recorded by one version only; the first step and name (in recording order: forward,
    backward, step) that differ at all."""
    rows, only_old, only_new, first = [], set(), set(), None
    for step, (ro, rn) in enumerate(zip(old, new), 1):
        only_old |= set(ro) - set(rn)
        only_new |= set(rn) - set(ro)
        row = {}
        for name in (n for n in ro if n in rn):
            cat = name.split('/', 1)[0]
            a, r = _diff(ro[name], rn[name])
            same = ro[name].shape == rn[name].shape and torch.equal(ro[name], rn[name])
            if not same and first is None:
                first = (step, name)
            prev = row.get(cat, (0.0, 0.0, True))
            row[cat] = (max(prev[0], a), max(prev[1], r), prev[2] and same)
        rows.append(row)
    return dict(rows=rows, only_old=sorted(only_old), only_new=sorted(only_new),
                first_difference=first)


def compare_versions(old: str, new: str = WORKTREE, dtype: str = 'float32', steps: int = 12,
                     burnin: int = 0, lr: float = 0.02, eval_every: int = 4, seed: int = 0,
                     buffer_num: int = 3, align_reductions: bool = False,
                     workdir: Optional[str] = None) -> Dict:
    """Run the fixed sequence (:func:`make_inputs`) under both versions (git revisions or
    ``WORKTREE``) and compare them step by step (:func:`compare_traces`)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        inputs_path = osp.join(tmp, 'inputs.pt')
        torch.save(make_inputs(steps, seed), inputs_path)
        sides = _run_sides(old, new, tmp, [
            '--inputs', inputs_path, '--dtype', dtype, '--burnin', str(burnin), '--lr', str(lr),
            '--eval-every', str(eval_every), '--buffer-num', str(buffer_num)],
            new_args=['--align-reductions'] if align_reductions else [])
    result = compare_traces(sides[0]['trace'], sides[1]['trace'])
    result.update(old=old, new=new, dtype=dtype, steps=steps, burnin=burnin, lr=lr,
                  eval_every=eval_every, seed=seed, buffer_num=buffer_num,
                  align_reductions=align_reductions)
    return result


def compare_detectors(old: str, new: str = WORKTREE, iters: int = 40,
                      config: str = DETECTOR_CONFIG, record: str = DETECTOR_RECORD,
                      snapshots: str = '1,2,3,5,10,20,50', align_reductions: bool = False,
                      norm: Optional[str] = None, perturb_ulp: bool = False,
                      workdir: Optional[str] = None) -> Dict:
    """Train the norm_sweep arm of ``record`` (its config options) for ``iters`` iterations
    under both versions, each with its own ``mmnorm_plugin`` and ``configs/`` (the same
    ``data/``), and compare per iteration the logged losses, the CBN counters and (after the
    iterations in ``snapshots``) the parameters. ``norm`` and ``perturb_ulp``: see
    :func:`run_detector` (the perturbation on the new side only)."""
    common = ['--detector', str(iters), '--config', config, '--options', osp.abspath(record),
              '--snapshots', snapshots] + (['--norm', norm] if norm else [])
    new_args = (['--align-reductions'] if align_reductions else []) + (
        ['--perturb-ulp'] if perturb_ulp else [])
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        old_r, new_r = _run_sides(old, new, tmp, common, ('mmnorm_plugin', 'configs'), new_args)
    rows = []
    for i, (lo, ln) in enumerate(zip(old_r['losses'], new_r['losses']), 1):
        co, cn = old_r['counters'][i - 1], new_r['counters'][i - 1]
        losses = [k for k in lo if k.startswith('loss')]  # not 'acc' (percent of RoIs)
        row = dict(
            iter=i, loss_old=lo['loss'], loss_new=ln['loss'],
            loss_abs=max(abs(lo[k] - ln[k]) for k in losses),
            loss_rel=max(abs(lo[k] - ln[k]) / max(abs(lo[k]), abs(ln[k]), 1e-30)
                         for k in losses),
            acc_diff=abs(lo.get('acc', 0.0) - ln.get('acc', 0.0)),
            counters_equal=co.keys() == cn.keys() and all(torch.equal(co[k], cn[k]) for k in co))
        if i in old_r['params'] and i in new_r['params']:
            po, pn = old_r['params'][i], new_r['params'][i]
            diffs = {k: _diff(po[k], pn[k]) for k in po}
            worst = max(diffs, key=lambda k: diffs[k][1])
            row.update(param_abs=max(d[0] for d in diffs.values()), param_rel=diffs[worst][1],
                       param_worst=worst,
                       params_identical=all(torch.equal(po[k], pn[k]) for k in po))
        rows.append(row)
    return dict(old=old, new=new, iters=iters, config=config, align_reductions=align_reductions,
                norm=norm, perturb_ulp=perturb_ulp,
                record=osp.relpath(osp.abspath(record), ROOT), rows=rows)


def _title(result: Dict) -> str:
    notes = [n for n, on in (('--align-reductions', result['align_reductions']),
                             ('one ulp moved', result.get('perturb_ulp'))) if on]
    return (f"{result['old']} vs {result['new']}"
            + (f" (new side: {', '.join(notes)})" if notes else '')
            + (f", norm_cfg type {result['norm']}" if result.get('norm') else ''))


def format_table(result: Dict) -> str:
    cats = [c for c in CATEGORIES if any(c in row for row in result['rows'])]
    lines = [f"{_title(result)}, {result['dtype']}, buffer_num {result['buffer_num']}, burn-in "
             f"{result['burnin']}, lr {result['lr']}: max abs diff / max rel diff per category "
             "('=' bit-identical; counters: number of differing entries)", '',
             'step | ' + ' | '.join(cats) + ' |', '|---|' + '---|' * len(cats)]
    for step, row in enumerate(result['rows'], 1):
        cells = ['' if cat not in row else '=' if row[cat][2] else
                 f'{row[cat][0]:.1e} / {row[cat][1]:.1e}' for cat in cats]
        lines.append(f'{step} | ' + ' | '.join(cells) + ' |')
    first = result['first_difference']
    lines += ['', 'first difference: ' + ('none (bit-identical)' if first is None else
                                          f'step {first[0]}, {first[1]}')]
    if result['only_old'] or result['only_new']:
        lines.append(f"recorded by one side only (not compared): old {result['only_old']}, "
                     f"new {result['only_new']}")
    return '\n'.join(lines)


def format_detector_table(result: Dict) -> str:
    lines = [f"{_title(result)}: {result['config']} with the options of {result['record']}, "
             f"{result['iters']} iterations", '',
             'iter | loss (old) | loss (new) | losses: max abs diff | losses: max rel diff | '
             'acc diff (points) | CBN counters | params: max abs / rel diff (tensor) |',
             '|---|---|---|---|---|---|---|---|']
    for r in result['rows']:
        params = ''
        if 'param_abs' in r:
            params = ('= (bit-identical)' if r['params_identical'] else
                      f"{r['param_abs']:.1e} / {r['param_rel']:.1e} ({r['param_worst']})")
        lines.append(f"{r['iter']} | {r['loss_old']:.7f} | {r['loss_new']:.7f} | "
                     f"{r['loss_abs']:.1e} | {r['loss_rel']:.1e} | {r['acc_diff']:.2f} | "
                     f"{'equal' if r['counters_equal'] else 'DIFFER'} | {params} |")
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--old', default='4d3938b', help='git revision (or WORKTREE)')
    parser.add_argument('--new', default=WORKTREE, help='git revision (or WORKTREE, default)')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'float64'))
    parser.add_argument('--steps', type=int, default=12)
    parser.add_argument('--burnin', type=int, default=0)
    parser.add_argument('--buffer-num', type=int, default=3)
    parser.add_argument('--lr', type=float, default=0.02)
    parser.add_argument('--eval-every', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--align-reductions', action='store_true',
                        help='diagnostic: the new side (a17ef33 layout) reduces over the filled '
                        'window slots only, as 4d3938b did (align_window_reductions)')
    parser.add_argument('--detector', type=int, metavar='ITERS',
                        help='instead: train the norm_sweep detector arm for ITERS iterations '
                        'under both versions and compare losses and parameters')
    parser.add_argument('--config', default=DETECTOR_CONFIG, help='(--detector) the config')
    parser.add_argument('--options', default=DETECTOR_RECORD,
                        help="(--detector) a norm_sweep record whose 'options' make the arm")
    parser.add_argument('--snapshots', default='1,2,3,5,10,20,50',
                        help='(--detector) iterations after which parameters are compared')
    parser.add_argument('--norm', help="(--detector) control arm: this norm type instead of the "
                        "record's (e.g. BN)")
    parser.add_argument('--perturb-ulp', action='store_true',
                        help="(--detector) control: the new side's first weight moved by one "
                        'ulp before training')
    parser.add_argument('--json', help='also write the result here')
    for hidden in ('--root', '--inputs', '--out', '--work-dir'):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    if args.detector:
        result = compare_detectors(args.old, args.new, args.detector, args.config, args.options,
                                   args.snapshots, args.align_reductions, args.norm,
                                   args.perturb_ulp)
        text = format_detector_table(result)
    else:
        result = compare_versions(args.old, args.new, args.dtype, args.steps, args.burnin,
                                  args.lr, args.eval_every, args.seed, args.buffer_num,
                                  args.align_reductions)
        text = format_table(result)
    print(text)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
