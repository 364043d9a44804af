"""What every part of the GPU check shares: its declaration (:class:`Part`), what it runs with
(:class:`Context`), the loop over its items (:func:`run_items`), the tolerances and the cell
formatting of the table."""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Union

import torch

from ..measure import Budget, error_text

__all__ = ['Part', 'Context', 'run_items', 'TOLERANCES', 'AMP_DTYPES', 'within', 'fmt_errs',
           'worst', 'cell', 'problem']

#: relative errors (‖a − b‖ / ‖b‖) allowed. fp32: the first step's output and gradients (all
#: parameters as one vector, and the worst one), the per-step losses and the state after all
#: steps, against the CPU in float64 and in float32 (float32 arithmetic lands far under 1e-4
#: on these sizes; TF32 is off). bf16/fp16: an autocast run against the float32 run on the
#: same device (its state after several steps is not compared: the trajectories part);
#: measured on the CPU for BN at bf16 (output, grad) ≈ (3e-3, 6e-2), at fp16 (4e-4, 9e-3).
TOLERANCES = {
    'fp32': dict(output=1e-4, grad=1e-4, grad_max=1e-3, loss=1e-4, state=1e-3),
    'bf16': dict(output=3e-2, grad=1.5e-1, loss=2e-2),
    'fp16': dict(output=5e-3, grad=5e-2, loss=5e-3),
    'compile': dict(output=1e-4, grad=1e-4, grad_max=1e-3, loss=1e-4, state=1e-3),
}
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass
class Context:
    """What a part runs with: the kit's configuration, the device, its share of the time
    (:class:`~mmnorm_plugin.gpu_check.measure.Budget`), the log, a cache shared by the parts
    of one run (the float32 runs of ``correctness`` serve ``amp``) and ``save``."""
    cfg: object
    device: torch.device
    budget: Budget
    log: Callable[[str], None] = print
    cache: dict = field(default_factory=dict)
    #: called with the items done so far after each one (the runner writes the JSON then, so
    #: a run stopped from outside keeps them)
    save: Callable[[list], None] = lambda items: None

    @property
    def cuda(self) -> bool:
        return self.device.type == 'cuda'


@dataclass(frozen=True)
class Part:
    """One part of the GPU check, declared once; listing it in
    :data:`mmnorm_plugin.gpu_check.parts.REGISTRY` puts it in the run, the JSON and the table.

    Args:
        name (str): its key in the JSON's ``parts``, in ``--parts`` and in the table.
        share (float): its claim on the time left when it starts, weighed against the parts
            that run after it (what earlier parts did not use goes on to later ones).
        run (callable): ``run(ctx: Context) -> dict`` with ``items`` (one per norm, shape or
            mode, each with a ``status``) and optionally ``notes`` and ``tolerance``; the kit
            adds ``status``, ``seconds`` and ``budget_s``.
        rows (callable, optional): ``rows(part: dict) -> list of str``, the part's section
            of the table (its heading first) from what ``run`` returned. Default: ``None``
            (the part has only its line in the summary at the top of the table).
    """
    name: str
    share: float
    run: Callable[[Context], dict]
    rows: Optional[Callable[[dict], List[str]]] = None

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f'a part name must be an identifier, got {self.name!r}')
        if not (isinstance(self.share, (int, float)) and self.share > 0):
            raise ValueError(f'part {self.name}: share must be > 0, got {self.share!r}')
        if not callable(self.run) or (self.rows is not None and not callable(self.rows)):
            raise TypeError(f'part {self.name}: run and rows must be callables')


Measure = Callable[[Any, dict], Union[None, List[dict]]]


def run_items(ctx: Context, part: str, keys: Sequence[Hashable], measure: Measure, *,
              essential: bool = True, label: Callable[[Any], str] = str,
              skipped: Optional[Callable[[Any], List[dict]]] = None,
              note: Callable[[dict], str] = lambda item: '') -> List[dict]:
    """The loop every part runs over its keys (norms, shapes, dtypes).

    For each key, while the budget lasts: ``measure(key, item)`` fills
    ``item = dict(name=label(key), status='passed')`` (and returns ``None``), or returns the
    list of items that key made (a block of rows). An exception is recorded on ``item``
    (``status='error'``, the message and the last frames; what was filled before stays) and
    the loop goes on with the next key. After every key the items so far are handed to
    ``ctx.save`` and a line is logged.

    Args:
        essential (bool): every key runs until the whole run's deadline (the correctness
            parts, seconds on a GPU); otherwise only the first key does (a part always
            reports something while any time is left) and later ones stop at the part's
            share. Default: ``True``
        skipped (callable, optional): ``skipped(key) -> items`` for a key the budget did not
            reach. Default: one item ``dict(name=label(key), status='skipped',
            reason='budget')``
        note (callable): a suffix of the log line of a single item.
    """
    items: List[dict] = []
    for i, key in enumerate(keys):
        if ctx.budget.exhausted(essential=essential or i == 0):
            for rest in keys[i:]:
                items += (skipped(rest) if skipped is not None else
                          [dict(name=label(rest), status='skipped', reason='budget')])
            break
        item = dict(name=label(key), status='passed')
        try:
            made = measure(key, item)
        except Exception as exc:  # noqa: BLE001  (recorded on the item, the part goes on)
            item.update(status='error', **error_text(exc))
            made = None
        items += [item] if made is None else made
        ctx.save(items)
        ctx.log(f'  {part} {item["name"]}: {item["status"]}{note(item)}' if made is None
                else f'  {part} {label(key)}: done')
    return items


def within(errors: Dict[str, float], tol: Dict[str, float]) -> bool:
    return all(errors.get(k, 0.0) <= v for k, v in tol.items())


def fmt_errs(errors: Dict[str, float]) -> Dict[str, float]:
    """Errors rounded to 3 significant digits for the JSON."""
    return {k: (float(f'{v:.3g}') if isinstance(v, float) else v) for k, v in errors.items()}


def worst(errors) -> Optional[float]:
    """The largest error of a :func:`fmt_errs` dict; None for anything else (a note)."""
    if not isinstance(errors, dict):
        return None
    return max(v for k, v in errors.items() if k != 'state_worst_key')


# --------------------------------------------------------------------------- table cells
def cell(v, fmt: str = '{:.2g}') -> str:
    """A number in ``fmt``; ``-`` for None; anything else (a note) as text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return fmt.format(v)
    return '-' if v is None else str(v)


def problem(item: dict) -> str:
    """Why an item did not run: its error or skip reason; empty otherwise."""
    if item.get('status') in ('error', 'skipped'):
        return item.get('error') or item.get('reason') or ''
    return ''
