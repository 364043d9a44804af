"""Checkpoints that survive a crash while they are written, and that prove their bytes intact.

mmengine 0.10.7 writes a checkpoint in place (``open(path, 'wb')``), so a process killed during
the write (a preempted machine) leaves a half file under the final name, and ``last_checkpoint``
already names it on the next save; ``--resume`` then trusts it and fails. Nor does anything
check the bytes of a checkpoint that loads: torch does not verify the CRCs of its zip records,
so tensor bytes changed on disk load silently as other numbers.

Three pieces, used by :mod:`mmnorm_plugin.engine.safe_checkpoint` and our tools:

* :func:`atomic_write`: write to a temporary name in the same folder, flush and fsync it, then
  ``os.replace`` it onto the final name (atomic on POSIX) and fsync the folder. A crash at any
  instant leaves the old file or the new one under the final name, never a part of one; what
  it may leave is a temporary (:func:`stale_temporaries` finds them for removal).
* A SHA-256 of every tensor (and plain value) of the checkpoint outside ``meta``, recorded in
  ``meta['checksum']`` before the dict is serialized (:func:`add_checksum`); it covers the
  bytes that matter while staying independent of pickle's framing, so it can be stored in the
  file it describes. :func:`load_verified_checkpoint` recomputes it after loading. A checkpoint
  without one (plain mmdet/mmengine ones) loads without verification.
* :func:`resume_candidates` / :func:`find_intact_checkpoint`: the walk back from the newest
  checkpoint of a work dir to the newest one that loads and verifies.

Loading here is ``torch.load`` with whatever policy the caller has open (our tools: the scoped
allow-list of :mod:`mmnorm_plugin.checkpoint.loading`); nothing here widens it.
"""
import hashlib
import itertools
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ['atomic_write', 'stale_temporaries', 'add_checksum', 'checksum_problem',
           'has_checksum', 'load_checkpoint_file', 'load_verified_checkpoint',
           'checkpoint_problem', 'was_verified', 'DamagedCheckpoint', 'resume_candidates',
           'find_intact_checkpoint', 'CHECKSUM_KEY', 'LAST_CHECKPOINT']

CHECKSUM_KEY = 'checksum'
_ALGORITHM = 'sha256/tensors-v1'
LAST_CHECKPOINT = 'last_checkpoint'  # mmengine's pointer file in the work dir
_TMP_MARK = '.tmp-'
_TMP_NAME = re.compile(r'^\..+\.tmp-\d+-\d+$')
_tmp_counter = itertools.count()


class DamagedCheckpoint(RuntimeError):
    """A checkpoint that does not load, or whose tensors differ from its recorded checksum.

    The message is one line; our tools print it instead of a traceback.
    """

    def __init__(self, message: str, path: Optional[str] = None, reason: Optional[str] = None):
        self.path, self.reason = path, reason
        super().__init__(message)

    @classmethod
    def of(cls, path: str, reason: str) -> 'DamagedCheckpoint':
        return cls(f'checkpoint {path}: {reason}', path, reason)


# ------------------------------------------------------------------------------ atomic writes
def _write_synced(f, data: bytes) -> None:
    """Write all of ``data`` and push it to the disk before the file may be renamed.

    A separate function so that tests can interrupt a write half way (fault injection).
    """
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old content or the new one."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # same folder: os.replace is only atomic within one file system; pid + counter: unique
    # among concurrent writers (ranks, threads) without mkstemp's 0600 mode (os.open applies
    # the umask like the plain open() mmengine uses)
    tmp = osp.join(folder, f'.{osp.basename(path)}{_TMP_MARK}{os.getpid()}-{next(_tmp_counter)}')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            _write_synced(f, data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    # makes the rename itself durable (power loss); some file systems cannot open a folder
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(folder: str) -> List[str]:
    """Temporaries :func:`atomic_write` left in ``folder`` when its process was killed."""
    if not osp.isdir(folder):
        return []
    return sorted(osp.join(folder, n) for n in os.listdir(folder) if _TMP_NAME.match(n))


# ---------------------------------------------------------------------------------- checksums
def _feed(h, path: str, obj) -> None:
    """Hash ``obj`` with its position ``path`` (so that swapped tensors do not cancel out)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.is_quantized:
            t = t.int_repr()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous()
        h.update(f'{path}|tensor|{t.dtype}|{tuple(t.shape)}\n'.encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        h.update(f'{path}|ndarray|{obj.dtype.str}|{obj.shape}\n'.encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        h.update(f'{path}|dict|{len(obj)}\n'.encode())
        for key, value in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__,
                                                              repr(kv[0]))):
            _feed(h, f'{path}[{key!r}]', value)
    elif isinstance(obj, (list, tuple)):
        h.update(f'{path}|{type(obj).__name__}|{len(obj)}\n'.encode())
        for i, value in enumerate(obj):
            _feed(h, f'{path}[{i}]', value)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(f'{path}|{type(obj).__name__}|{obj!r}\n'.encode())
    else:
        # other objects (mmengine's HistoryBuffer: logged loss curves) may pickle state that
        # is not their attributes; hashing their type only cannot report a false mismatch
        h.update(f'{path}|{type(obj).__module__}.{type(obj).__qualname__}\n'.encode())


def _digests(checkpoint: dict, sections) -> Dict[str, str]:
    out = {}
    for section in sections:
        h = hashlib.sha256()
        _feed(h, section, checkpoint[section])
        out[section] = h.hexdigest()
    return out


def add_checksum(checkpoint: dict) -> dict:
    """Record the SHA-256 of every section but ``meta`` in ``checkpoint['meta']``; returns it.

    Call it on the final dict, right before it is serialized (``before_save_checkpoint``).
    """
    meta = checkpoint.setdefault('meta', {})
    meta[CHECKSUM_KEY] = dict(algorithm=_ALGORITHM, sections=_digests(
        checkpoint, sorted(k for k in checkpoint if k != 'meta')))
    return checkpoint


def checksum_problem(checkpoint: dict) -> Optional[str]:
    """Why ``checkpoint`` does not match its recorded checksum; ``None`` when it matches.

    Raises ``KeyError`` for a checkpoint that records none (see :func:`has_checksum`).
    """
    record = checkpoint['meta'][CHECKSUM_KEY]
    if not isinstance(record, dict) or record.get('algorithm') != _ALGORITHM:
        return (f"its checksum is of an unknown kind ({record!r:.60}); this version of "
                f'mmnorm_plugin verifies {_ALGORITHM}')
    expected = record['sections']
    missing = sorted(s for s in expected if s not in checkpoint)
    if missing:
        return f"it lacks {', '.join(missing)}, which it held when it was saved"
    found = _digests(checkpoint, sorted(expected))
    bad = [s for s in sorted(expected) if found[s] != expected[s]]
    if bad:
        return (f"the SHA-256 of its {', '.join(bad)} differs from the one recorded when it was "
                'saved: its bytes changed after it was written (disk, copy or transfer)')
    return None


def has_checksum(checkpoint) -> bool:
    return isinstance(checkpoint, dict) and CHECKSUM_KEY in (checkpoint.get('meta') or {})


# ------------------------------------------------------------------------------------ loading
def load_checkpoint_file(path: str):
    """``torch.load`` to the CPU, memory-mapped (no second copy of a large file) when possible."""
    try:
        return torch.load(path, map_location='cpu', mmap=True)
    except RuntimeError as err:
        if 'mmap can only be used' not in str(err):  # legacy (non-zip) files cannot be mapped
            raise
        return torch.load(path, map_location='cpu')


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ''
    text = text.split('. ')[0].rstrip('.')
    return f'{type(err).__name__}: {text}' if text else type(err).__name__


# (path, size, mtime, inode) -> verified: a file our tool checked before the Runner loads it
# (tools/test.py, the resume walk-back) is not hashed a second time
_checked: Dict[Tuple, bool] = {}


def _file_key(path: str) -> Tuple:
    st = os.stat(path)
    return osp.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino


def load_verified_checkpoint(path: str):
    """Load ``path`` and check its recorded checksum, if it has one.

    Raises :class:`DamagedCheckpoint` (one line) when the file does not load or its tensors
    changed. ``pickle.UnpicklingError`` from an intact file (the weights-only unpickler refused
    what it holds) propagates: that is a decision for the user (``--unsafe-load``), not damage
    to walk back from.
    """
    if not osp.isfile(path):
        raise DamagedCheckpoint.of(path, 'no such file')
    key = _file_key(path)
    try:
        checkpoint = load_checkpoint_file(path)
    except pickle.UnpicklingError as err:
        if not _pickle_damaged(path):
            raise
        raise DamagedCheckpoint.of(path, f'its pickled structure is damaged (the CRC-32 of its '
                                   f'.pkl record differs; {_first_sentence(err)})') from err
    except Exception as err:  # what a truncated or overwritten file raises varies by spot
        raise DamagedCheckpoint.of(path, f'it does not load ({_first_sentence(err)}): the file '
                                   'is truncated or damaged') from err
    if has_checksum(checkpoint):
        problem = checksum_problem(checkpoint)
        if problem:
            raise DamagedCheckpoint.of(path, problem)
    _checked[key] = has_checksum(checkpoint)
    return checkpoint


def _pickle_damaged(path: str) -> bool:
    """Whether the pickle records of a torch zip file fail their CRC-32 (torch writes one per
    record but never checks it): tells bytes damaged on disk from objects the unpickler refused."""
    if not zipfile.is_zipfile(path):  # legacy format: no CRCs to tell by
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith('.pkl'):
                    with zf.open(info) as f:  # zipfile checks the CRC when the record ends
                        while f.read(1 << 20):
                            pass
    except (zipfile.BadZipFile, OSError, EOFError):
        return True
    return False


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from or evaluated; ``None`` when it loads and verifies.

    ``pickle.UnpicklingError`` propagates, as from :func:`load_verified_checkpoint`.
    """
    try:
        if osp.isfile(path) and _file_key(path) in _checked:
            return None
        load_verified_checkpoint(path)
    except DamagedCheckpoint as err:
        return err.reason
    return None


def was_verified(path: str) -> bool:
    """Whether ``path`` (as it is now) was loaded here and matched a recorded checksum."""
    return osp.isfile(path) and _checked.get(_file_key(path), False)


# ----------------------------------------------------------------------------------- resuming
def _step_pattern(filename_tmpl: str):
    head, _, tail = filename_tmpl.partition('{}')
    return re.compile(f'^{re.escape(head)}(\\d+){re.escape(tail)}$')


def resume_candidates(work_dir: str, filename_tmpl: str,
                      extra_dirs: Tuple[str, ...] = ()) -> List[str]:
    """The checkpoints an auto-resume may use, newest first.

    The newest is what ``<work_dir>/last_checkpoint`` names (mmengine's rule; it may be in
    another ``out_dir``), then the files of its folder, ``work_dir`` and ``extra_dirs`` whose
    names fit ``filename_tmpl`` (``iter_{}.pth``) with a smaller step. Without a readable
    ``last_checkpoint``, all those files by step.
    """
    pattern = _step_pattern(filename_tmpl)
    last = None
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    if osp.isfile(pointer):
        with open(pointer) as f:
            last = f.read().strip() or None
    folders = [work_dir, *extra_dirs] + ([osp.dirname(last)] if last else [])
    by_step: Dict[str, Tuple[int, str]] = {}
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = pattern.match(name)
            if match:
                path = osp.join(folder, name)
                by_step.setdefault(osp.realpath(path), (int(match.group(1)), path))
    ordered = [path for _, path in sorted(by_step.values(), key=lambda sp: -sp[0])]
    if last is None:
        return ordered
    match = pattern.match(osp.basename(last))
    if match is None:  # a pointer to a file of another name: it first, then the rest
        return [last] + [p for p in ordered if osp.realpath(p) != osp.realpath(last)]
    newest = int(match.group(1))
    return [last] + [p for p in ordered if by_step[osp.realpath(p)][0] < newest]


def find_intact_checkpoint(candidates: List[str]) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The first of ``candidates`` that loads and verifies, and ``(path, why)`` of those skipped.

    A candidate the weights-only unpickler refuses stops the walk (``pickle.UnpicklingError``):
    resuming from an older checkpoint would hide that decision from the user.
    """
    skipped = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped
