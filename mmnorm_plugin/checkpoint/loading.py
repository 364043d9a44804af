"""Load checkpoints weights-only, one load at a time, trusting only named files; never run text.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls
``torch.load`` without the argument, so mmengine's own Runner checkpoints (a ``MessageHub`` of
``HistoryBuffer`` objects holding numpy arrays) do not load. Our tools load them through
:func:`load_checkpoint_bytes`:

* **Per load, nothing callable from numpy or mmengine.** :func:`mmengine_checkpoint_loading` is
  open around the ``torch.load`` call only, under one process-wide lock; it binds the names old
  Runner checkpoints use to the validating stand-ins of
  :mod:`~mmnorm_plugin.checkpoint.legacy_objects` (never to ``HistoryBuffer``, numpy's
  ``_reconstruct`` or ``getattr`` themselves) and removes on exit exactly the entries it added
  (entries others added before or meanwhile stay). Another thread's ``torch.load`` that runs
  while a load of ours is in progress can meet those stand-ins, which refuse anything but a
  buffer's or numeric array's own state. Importing the plugin changes nothing.
* **Trust names one file.** ``--unsafe-load PATH`` (:data:`UNSAFE_LOAD_FLAG`,
  :func:`trusted_checkpoints`) lets exactly that file load with the full pickle machinery
  (``weights_only=False`` passed to that call; ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is never
  set). Every other load of the run stays weights-only.
* **One line per refusal**, naming the file and what was refused
  (:class:`RefusedCheckpoint`).
* **Text is data.** :func:`compare_checkpoint_with_model` reads the saved config
  (``meta['cfg']``) with :func:`~mmnorm_plugin.checkpoint.config_text.literal_assignments`, and
  :func:`drop_executable_meta` removes what mmengine would execute (``meta['config']``, which
  ``Runner.resume`` passes to ``Config.fromstring``) before the Runner sees a checkpoint.

:func:`compare_checkpoint_with_model` backs ``tools/test.py``'s check that a checkpoint fits
the config it is evaluated with (mmengine loads non-strictly and only logs the mismatch, so a
wrong pairing evaluates a half-random model: an mAP near zero instead of an error).
"""
import contextlib
import io
import os.path as osp
import pickle
import re
import threading
from typing import Iterable, Iterator, List, Optional

import torch

from .legacy_objects import legacy_globals, materialize

__all__ = ['mmengine_checkpoint_loading', 'UNSAFE_LOAD_FLAG', 'unsafe_load_message',
           'RefusedCheckpoint', 'load_checkpoint_bytes', 'trusted_checkpoints', 'is_trusted',
           'drop_executable_meta', 'EXECUTED_META_KEYS', 'CheckpointMismatch',
           'compare_checkpoint_with_model', 'config_differences', 'format_mismatch',
           'load_foreign_checkpoint']

UNSAFE_LOAD_FLAG = '--unsafe-load'
#: ``meta`` entries mmengine 0.10.7 executes as Python on the paths our tools drive
#: (``Runner.resume``: ``Config.fromstring(meta['config'])`` to compare GPU counts)
EXECUTED_META_KEYS = ('config',)

# serializes our loads: the allow-list entries are process-wide, so two loads of ours must not
# add and remove them under each other
_LOCK = threading.RLock()
_trusted: frozenset = frozenset()


@contextlib.contextmanager
def mmengine_checkpoint_loading() -> Iterator[None]:
    """Within the block (keep it around one ``torch.load``), the weights-only unpickler reads
    old-format mmengine Runner checkpoints through validating stand-ins.

    Holds the loading lock for the block; on exit removes exactly the allow-list entries it
    added. Arrays outside a ``HistoryBuffer`` come back as recipes unless the result goes
    through :func:`~mmnorm_plugin.checkpoint.legacy_objects.materialize`
    (:func:`load_checkpoint_bytes` does both).
    """
    with _LOCK:
        present = torch.serialization.get_safe_globals()
        added = [entry for entry in legacy_globals() if entry not in present]
        with torch.serialization.safe_globals(added):  # removes exactly `added` on exit
            yield


class RefusedCheckpoint(pickle.UnpicklingError):
    """A checkpoint the weights-only load refused; the message is one line naming the file,
    what was refused and the flag that would trust the file."""

    def __init__(self, path: str, refused: str, flag: str = UNSAFE_LOAD_FLAG):
        self.path, self.refused, self.flag = path, refused, flag
        super().__init__(f'checkpoint {path}: refused {refused}. If you trust this file, rerun '
                         f'with {flag} {path} (that runs any code stored in it).')


_TORCH_REFUSALS = (  # torch's messages (2.6-2.13) -> what was refused
    (r'Unsupported global: GLOBAL (\S+) was not an allowed global', 'the global {}'),
    (r'Trying to load unsupported GLOBAL (\S+) whose module', 'the global {} (blocked module)'),
    (r'Trying to call reduce for unrecognized function ([^\n]+?)(?: which belongs to|\n|$)',
     'a call of {}'),
    (r'Can only create new object for [^\n]* but got ([^\n]+)', 'a new object of {}'),
    (r'Can only build [^\n]* but got ([^\n]+)', 'a BUILD of {}'),
    (r'(?:^|\n)\s*refused ([^\n]+)', '{}'),  # the stand-ins of legacy_objects
)


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r'\x1b\[[0-9;]*m', '', text)
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def refused_what(err: BaseException) -> str:
    """What a weights-only refusal refused (``the global argparse.Namespace``), in one line."""
    text = str(err)
    for pattern, form in _TORCH_REFUSALS:
        match = re.search(pattern, text)
        if match:
            return _one_line(form.format(match.group(1).strip()))
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return _one_line(lines[0] if lines else type(err).__name__)


def unsafe_load_message(err: BaseException, what: str = 'a checkpoint') -> str:
    """One line for a weights-only refusal of a load our tools did not make themselves."""
    if isinstance(err, RefusedCheckpoint):
        return str(err)
    return (f'{what}: refused {refused_what(err)}. If you trust the file, rerun with '
            f'{UNSAFE_LOAD_FLAG} PATH naming it (that runs any code stored in it).')


def _keys(path: str) -> set:
    keys = {str(path)}
    if '://' not in str(path):
        keys.add(osp.realpath(osp.expanduser(str(path))))
    return keys


@contextlib.contextmanager
def trusted_checkpoints(paths: Iterable[str]) -> Iterator[None]:
    """Within the block, :func:`load_checkpoint_bytes` loads exactly these files (or URLs)
    with the full pickle machinery (the user typed ``--unsafe-load PATH``). Restores the set
    exactly on exit."""
    global _trusted
    new = set().union(*(_keys(p) for p in paths)) if paths else set()
    with _LOCK:
        added = new - _trusted
        _trusted = _trusted | added
    try:
        yield
    finally:
        with _LOCK:
            _trusted = _trusted - added


def is_trusted(path: str) -> bool:
    """Whether the user trusted ``path`` (:func:`trusted_checkpoints`)."""
    return bool(_keys(path) & _trusted)


def load_checkpoint_bytes(data: bytes, path: str, map_location='cpu',
                          trusted: Optional[bool] = None, flag: str = UNSAFE_LOAD_FLAG):
    """Unpickle checkpoint ``data`` (the bytes of file ``path``) from memory.

    Weights-only with the old-format stand-ins, then
    :func:`~mmnorm_plugin.checkpoint.legacy_objects.materialize`; a refusal raises
    :class:`RefusedCheckpoint` naming ``path`` and ``flag``. ``trusted`` (default:
    :func:`is_trusted`) loads with ``weights_only=False`` instead: for files the user named.
    Other errors (a malformed or truncated file) propagate as torch raises them.
    """
    if trusted is None:
        trusted = is_trusted(path)
    if trusted:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    try:
        with mmengine_checkpoint_loading():
            checkpoint = torch.load(io.BytesIO(data), map_location=map_location,
                                    weights_only=True)
        return materialize(checkpoint)
    except pickle.UnpicklingError as err:
        raise RefusedCheckpoint(path, refused_what(err), flag) from None


def load_foreign_checkpoint(path: str, trust_pickle: bool = False):
    """Load a checkpoint from elsewhere (an official release) for conversion.

    Weights-only unless ``trust_pickle`` (which runs pickled code: trusted files only); a
    refused file ends the run with one line naming the file, what was refused and
    ``--trust-pickle``.
    """
    with open(path, 'rb') as f:
        data = f.read()
    try:
        return load_checkpoint_bytes(data, path, trusted=trust_pickle, flag='--trust-pickle')
    except RefusedCheckpoint as err:
        raise SystemExit(str(err)) from None


def drop_executable_meta(checkpoint, path: str) -> List[str]:
    """Remove the ``meta`` entries mmengine would execute (:data:`EXECUTED_META_KEYS`) from
    ``checkpoint`` in place; returns one log line per entry removed."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    lines = []
    if isinstance(meta, dict):
        for key in EXECUTED_META_KEYS:
            if key in meta:
                del meta[key]
                lines.append(f"checkpoint {path}: removed meta['{key}'] before the Runner reads "
                             "it (mmengine would execute it as Python to compare GPU counts; "
                             'that comparison is skipped)')
    return lines


class CheckpointMismatch(RuntimeError):
    """The checkpoint does not fit the model built from the config (see the message)."""


def _flatten(cfg, path=''):
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            out.update(_flatten(value, f'{path}.{key}' if path else str(key)))
        return out or {path: {}}
    if isinstance(cfg, (list, tuple)):
        out = {}
        for i, value in enumerate(cfg):
            out.update(_flatten(value, f'{path}[{i}]'))
        return out or {path: type(cfg)()}
    return {path: cfg}


# training-only or initialization settings: they do not change the evaluated model
_NOT_COMPARED = ('train_cfg', 'init_cfg', 'pretrained')


def config_differences(saved_model_cfg, model_cfg, limit: int = 12) -> List[str]:
    """Lines ``path: checkpoint <a> vs config <b>`` for the model configs' differing leaves."""
    saved, now = _flatten(saved_model_cfg, 'model'), _flatten(model_cfg, 'model')
    lines = []
    for key in sorted(set(saved) | set(now)):
        if any(part in key for part in _NOT_COMPARED):
            continue
        a, b = saved.get(key, '<absent>'), now.get(key, '<absent>')
        if a != b:
            lines.append(f'  {key}: checkpoint {a!r} vs config {b!r}')
    if len(lines) > limit:
        lines = lines[:limit] + [f'  ... and {len(lines) - limit} more']
    return lines


def compare_checkpoint_with_model(model, checkpoint: dict, model_cfg=None) -> dict:
    """What differs between ``checkpoint`` and ``model`` (built from ``model_cfg``).

    Returns ``dict(missing, unexpected, shapes, config)``: model keys absent from the
    checkpoint, checkpoint keys the model does not have, ``(key, ckpt shape, model shape)``
    mismatches, and the differing leaves of the checkpoint's saved ``meta['cfg'].model`` vs
    ``model_cfg`` (read as literals: nothing in the text runs). Training-only norm state
    (CBN windows, MABN rings: see :mod:`mmnorm_plugin.converters.release`) and
    ``num_batches_tracked`` are not compared: a stripped checkpoint, or a CBN checkpoint under
    its BN twin config, is a match.
    """
    from .keys import is_training_only_key
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    state = state if isinstance(state, dict) else {}  # no weights at all: everything missing
    state = {k[7:] if k.startswith('module.') else k: v
             for k, v in ((str(k), v) for k, v in state.items())}
    own = model.state_dict()
    ckpt_keys, own_keys = set(state), set(own)

    def relevant(key, keys):
        return not (is_training_only_key(key, keys) or key.endswith('num_batches_tracked'))

    missing = sorted(k for k in own_keys - ckpt_keys if relevant(k, own_keys))
    unexpected = sorted(k for k in ckpt_keys - own_keys if relevant(k, ckpt_keys))
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape))
              for k in sorted(ckpt_keys & own_keys)
              if relevant(k, own_keys) and hasattr(state[k], 'shape')
              and tuple(state[k].shape) != tuple(own[k].shape)]
    config = []
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    saved_cfg = meta.get('cfg') if isinstance(meta, dict) else None
    if isinstance(saved_cfg, str) and model_cfg is not None:
        # read as data, never executed (see config_text); a saved config that cannot be read
        # must not block evaluation
        from .config_text import NotLiteral, literal_assignments
        try:
            values, problems = literal_assignments(saved_cfg, names=['model'])
        except NotLiteral as err:
            values, problems = {}, [str(err)]
        if isinstance(values.get('model'), dict):
            config = config_differences(values['model'], _to_dict(model_cfg))
        elif problems:
            config = [f"  (the saved config's model is not a plain literal, not compared: "
                      f'{problems[0]})']
    return dict(missing=missing, unexpected=unexpected, shapes=shapes, config=config)


def _to_dict(cfg):
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg


def format_mismatch(report: dict, checkpoint_path: str, config_path: str,
                    limit: int = 8) -> str:
    """A readable account of :func:`compare_checkpoint_with_model`'s report."""
    def some(items):
        items = list(items)
        head = ', '.join(str(i) for i in items[:limit])
        return head + (f' ... ({len(items)} in all)' if len(items) > limit else '')
    lines = [f'checkpoint {checkpoint_path} does not match the model built from {config_path}:']
    if report['missing']:
        lines.append(f"- {len(report['missing'])} model weights are not in the checkpoint (they "
                     f"would stay randomly initialized): {some(report['missing'])}")
    if report['shapes']:
        lines.append('- shape mismatches (checkpoint vs model): ' + some(
            f'{k} {a} vs {b}' for k, a, b in report['shapes']))
    if report['unexpected']:
        lines.append(f"- {len(report['unexpected'])} checkpoint entries the model does not have: "
                     f"{some(report['unexpected'])}")
    if report['config']:
        lines.append("- the checkpoint's saved config differs in:")
        lines.extend(report['config'])
    return '\n'.join(lines)
