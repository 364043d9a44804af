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
* A SHA-256 of every section of the checkpoint (``meta`` too, without the record itself),
  by type, shape and content of each value, recorded in ``meta['checksum']`` before the dict
  is serialized (:func:`add_checksum`, ``sha256/sections-v2``); it stays independent of
  pickle's framing, so it can be stored in the file it describes. Loading
  (:func:`load_verified_checkpoint`) reads the file's bytes once, checks the CRC-32 of every
  zip record, unpickles those bytes from memory and recomputes the SHA-256 of what it loaded:
  what is verified is what is used. Checkpoints of the old algorithm (``sha256/tensors-v1``,
  ``meta`` not covered) verify by it, and say so; a checkpoint without one (plain
  mmdet/mmengine ones) loads unverified, and says so.
* :func:`resume_candidates` / :func:`find_intact_checkpoint`: the walk back from the newest
  checkpoint of a work dir to the newest one that loads and verifies.

Unpickling is :func:`mmnorm_plugin.checkpoint.loading.load_checkpoint_bytes` (weights-only, one
load at a time); nothing here widens it.
"""
import hashlib
import io
import itertools
import os
import os.path as osp
import pickle
import re
import struct
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ['atomic_write', 'stale_temporaries', 'add_checksum', 'checksum_problem',
           'checksum_algorithm', 'has_checksum', 'read_checkpoint', 'checked_zip',
           'zip_crc_problem',
           'load_checkpoint_file', 'load_checkpoint_bytes_checked', 'load_verified_checkpoint',
           'checkpoint_problem', 'verification_status', 'was_verified', 'DamagedCheckpoint',
           'resume_candidates', 'find_intact_checkpoint', 'CHECKSUM_KEY', 'LAST_CHECKPOINT',
           'ALGORITHM', 'OLD_ALGORITHM', 'STATUS_TEXT', 'VERIFIED', 'VERIFIED_V1', 'UNVERIFIED']

CHECKSUM_KEY = 'checksum'
ALGORITHM = 'sha256/sections-v2'
OLD_ALGORITHM = 'sha256/tensors-v1'  # before issue 28: meta not covered
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
def _feed_v1(h, path: str, obj) -> None:
    """``sha256/tensors-v1`` (kept to verify checkpoints written before v2; do not change)."""
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
            _feed_v1(h, f'{path}[{key!r}]', value)
    elif isinstance(obj, (list, tuple)):
        h.update(f'{path}|{type(obj).__name__}|{len(obj)}\n'.encode())
        for i, value in enumerate(obj):
            _feed_v1(h, f'{path}[{i}]', value)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(f'{path}|{type(obj).__name__}|{obj!r}\n'.encode())
    else:
        h.update(f'{path}|{type(obj).__module__}.{type(obj).__qualname__}\n'.encode())


def _tensor_bytes(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.is_quantized:
        t = t.int_repr()
    if t.layout != torch.strided:
        t = t.to_dense()
    return t.cpu().contiguous()


def _feed(h, path: str, obj) -> None:
    """``sha256/sections-v2``: every value by type, shape and content, with its position
    ``path`` (so that swapped entries do not cancel out)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if isinstance(obj, torch.Tensor):
        if obj.device.type == 'meta':  # no values to hash (and the loader refuses them)
            h.update(f'{path}|meta tensor|{obj.dtype}|{tuple(obj.shape)}\n'.encode())
            return
        t = _tensor_bytes(obj)
        h.update(f'{path}|tensor|{obj.dtype}|{obj.is_quantized}|{tuple(t.shape)}|'
                 f'{type(obj).__name__}|{obj.requires_grad}\n'.encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, (np.ndarray, np.generic)) and not obj.dtype.hasobject:
        arr = np.ascontiguousarray(obj)
        h.update(f'{path}|{type(obj).__name__}|{obj.dtype.str}|{arr.shape}\n'.encode())
        h.update(arr.tobytes())
    elif isinstance(obj, HistoryBuffer):
        log, count = obj.data
        h.update(f'{path}|HistoryBuffer|{obj.max_length!r}\n'.encode())
        _feed(h, f'{path}.log', np.asarray(log))
        _feed(h, f'{path}.count', np.asarray(count))
    elif isinstance(obj, dict):
        h.update(f'{path}|{type(obj).__name__}|{len(obj)}\n'.encode())
        for key, value in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__,
                                                              repr(kv[0]))):
            _feed(h, f'{path}[{key!r}]', value)
        metadata = getattr(obj, '_metadata', None)  # state dicts: versions read by modules
        if metadata is not None:
            _feed(h, f'{path}._metadata', metadata)
    elif isinstance(obj, (list, tuple)):
        h.update(f'{path}|{type(obj).__name__}|{len(obj)}\n'.encode())
        for i, value in enumerate(obj):
            _feed(h, f'{path}[{i}]', value)
    elif isinstance(obj, (set, frozenset)):
        h.update(f'{path}|{type(obj).__name__}|{sorted(map(repr, obj))!r}\n'.encode())
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, bytearray,
                                         torch.dtype, torch.device, torch.layout, np.dtype)):
        h.update(f'{path}|{type(obj).__name__}|{obj!r}\n'.encode())
    else:
        # only a load the user trusted (--unsafe-load) or an object a hook put in the
        # checkpoint at save time gets here; the weights-only load refuses other types
        h.update(f'{path}|{type(obj).__module__}.{type(obj).__qualname__}\n'.encode())


def _sections(checkpoint: dict) -> Dict[str, object]:
    """The checkpoint's sections as hashed: ``meta`` without its checksum record."""
    out = {}
    for key, value in checkpoint.items():
        if key == 'meta' and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != CHECKSUM_KEY}
        out[str(key)] = value
    return out


def _digests(sections: Dict[str, object], feed=_feed) -> Dict[str, str]:
    out = {}
    for name in sorted(sections):
        h = hashlib.sha256()
        feed(h, name, sections[name])
        out[name] = h.hexdigest()
    return out


def add_checksum(checkpoint: dict) -> dict:
    """Record the SHA-256 of every section (``meta`` too, without this record) in
    ``checkpoint['meta']``; returns ``checkpoint``.

    Call it on the final dict, right before it is serialized (``before_save_checkpoint``).
    """
    meta = checkpoint.setdefault('meta', {})
    meta.pop(CHECKSUM_KEY, None)
    meta[CHECKSUM_KEY] = dict(algorithm=ALGORITHM, sections=_digests(_sections(checkpoint)))
    return checkpoint


def checksum_algorithm(checkpoint) -> Optional[str]:
    """The algorithm of ``checkpoint``'s checksum record (``None`` without one)."""
    if not has_checksum(checkpoint):
        return None
    record = checkpoint['meta'][CHECKSUM_KEY]
    return record.get('algorithm') if isinstance(record, dict) else None


def checksum_problem(checkpoint: dict) -> Optional[str]:
    """Why ``checkpoint`` does not match its recorded checksum; ``None`` when it matches.

    Verifies ``sha256/sections-v2`` and, for checkpoints written before it,
    ``sha256/tensors-v1`` (which did not cover ``meta``). Raises ``KeyError`` for a checkpoint
    that records none (see :func:`has_checksum`).
    """
    record = checkpoint['meta'][CHECKSUM_KEY]
    algorithm = record.get('algorithm') if isinstance(record, dict) else None
    expected = record.get('sections') if isinstance(record, dict) else None
    if algorithm not in (ALGORITHM, OLD_ALGORITHM):
        return (f"its checksum is of an unknown kind ({record!r:.60}); this version of "
                f'mmnorm_plugin verifies {ALGORITHM} and {OLD_ALGORITHM}')
    if not (isinstance(expected, dict) and all(
            type(k) is str and type(v) is str for k, v in expected.items())):
        return 'its checksum record is malformed'
    sections = _sections(checkpoint)
    missing = sorted(s for s in expected if s not in sections)
    if missing:
        return f"it lacks {', '.join(missing)}, which it held when it was saved"
    if algorithm == ALGORITHM:
        extra = sorted(s for s in sections if s not in expected)
        if extra:
            return f"it holds {', '.join(extra)}, which it did not hold when it was saved"
        found = _digests(sections)
    else:
        found = _digests({s: checkpoint[s] for s in expected}, feed=_feed_v1)
    bad = [s for s in sorted(expected) if found[s] != expected[s]]
    if bad:
        return (f"the SHA-256 of its {', '.join(bad)} differs from the one recorded when it was "
                'saved: its bytes changed after it was written (disk, copy, transfer or edit)')
    return None


def has_checksum(checkpoint) -> bool:
    return isinstance(checkpoint, dict) and isinstance(checkpoint.get('meta'), dict) \
        and CHECKSUM_KEY in checkpoint['meta']


# ------------------------------------------------------------------------------------ loading
#: what a load found, by :func:`verification_status`
VERIFIED, VERIFIED_V1, UNVERIFIED = 'verified', 'verified-v1', 'unverified'
STATUS_TEXT = {
    VERIFIED: f'checksum verified ({ALGORITHM}: every section, meta included)',
    VERIFIED_V1: (f'checksum verified by the old algorithm {OLD_ALGORITHM} (written before '
                  f'{ALGORITHM}; its meta is not covered)'),
    UNVERIFIED: 'it records no checksum, so it loads unverified',
}


def read_checkpoint(path: str) -> bytes:
    """The bytes of checkpoint file ``path``: read once, then checked and loaded from memory,
    so what is verified is what is loaded."""
    with open(osp.expanduser(path), 'rb') as f:
        return f.read()


_ZIP_MAGIC = b'PK\x03\x04'
# torch's legacy files start with the pickle of torch.serialization.MAGIC_NUMBER (LONG1, 10 bytes)
_LEGACY_MAGIC = b'\x8a\x0a' + (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')


def checked_zip(data: bytes) -> Tuple[bytes, Optional[str]]:
    """``(bytes for torch to read, problem)`` for the checkpoint file content ``data``.

    For a torch zip file, every record is read with Python's ``zipfile``, which checks its
    CRC-32 (torch writes one per record but never checks it), and written into a fresh
    archive: torch then reads exactly the records that were checked, even where its own zip
    reader would have found other ones (a prepended or shifted archive). ``problem`` says why
    the records fail (``data`` itself is returned then, for diagnosis only). A legacy (pre-1.6)
    file has no CRCs and is returned as it is.
    """
    buffer = io.BytesIO(data)
    try:
        is_zip = zipfile.is_zipfile(buffer)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as err:
        # e.g. a damaged zip64 end record ("zipfiles that span multiple disks...")
        return data, (f'its zip directory is damaged ({_first_sentence(err)}): the file is '
                      'truncated or damaged')
    if data[:4] != _ZIP_MAGIC and not is_zip:
        if data[:1] == b'\x80' and data[2:14] == _LEGACY_MAGIC:  # torch < 1.6 format
            return data, None
        return data, ('it is neither a zip archive nor torch\'s legacy format: the file is '
                      'truncated or damaged')
    if not is_zip:
        return data, 'its zip directory is missing: the file is truncated or damaged'
    out, bad = io.BytesIO(), []
    try:
        with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED,
                                                             allowZip64=True) as dst:
            infos = src.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                return data, 'its zip directory names a record twice'
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                    return data, (f'its record {info.filename} is compressed or encrypted '
                                  '(torch writes neither)')
                try:
                    with src.open(info) as r, dst.open(info.filename, 'w',
                                                       force_zip64=True) as w:
                        while True:  # zipfile checks the CRC when the record ends
                            chunk = r.read(1 << 22)
                            if not chunk:
                                break
                            w.write(chunk)
                except zipfile.BadZipFile:
                    bad.append(info.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError, UnicodeDecodeError) as err:
        return data, (f'its zip directory is damaged ({_first_sentence(err)}): the file is '
                      'truncated or damaged')
    if bad:
        some = ', '.join(bad[:3]) + (f' and {len(bad) - 3} more' if len(bad) > 3 else '')
        return data, (f'the CRC-32 of its record {some} differs from the one written with it: '
                      'its bytes changed after it was written')
    return out.getvalue(), None


def zip_crc_problem(data: bytes) -> Optional[str]:
    """Why the records of torch zip file ``data`` fail their CRC-32; ``None`` when all match
    or ``data`` is not a zip file (see :func:`checked_zip`)."""
    return checked_zip(data)[1]


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ''
    text = text.split('. ')[0].rstrip('.')
    return f'{type(err).__name__}: {text}'[:200] if text else type(err).__name__


def load_checkpoint_bytes_checked(data: bytes, path: str, map_location='cpu',
                                  verify: bool = True, trusted: Optional[bool] = None):
    """Load checkpoint ``data`` (the bytes of ``path``) and check it; returns
    ``(checkpoint, status)`` with ``status`` one of :data:`STATUS_TEXT`'s keys.

    Raises :class:`DamagedCheckpoint` (one line) when its zip CRCs fail, it does not load, or
    (``verify``) its sections differ from its recorded checksum;
    :class:`~mmnorm_plugin.checkpoint.loading.RefusedCheckpoint` when the weights-only load
    refuses what an intact file holds (the user's decision, not damage to walk back from).
    ``trusted``: see :func:`~mmnorm_plugin.checkpoint.loading.load_checkpoint_bytes`.
    """
    from .loading import load_checkpoint_bytes
    digest = hashlib.sha256(data).hexdigest()
    view, crc = checked_zip(data)
    try:
        checkpoint = load_checkpoint_bytes(view, path, map_location=map_location,
                                           trusted=trusted)
    except pickle.UnpicklingError as err:
        if crc:  # damage, not a decision: a flipped bit in a global's name is refused too
            raise DamagedCheckpoint.of(path, f'{crc} ({_first_sentence(err)})') from None
        raise
    except Exception as err:  # what a truncated or overwritten file raises varies by spot
        reason = f'{crc or "it does not load"} ({_first_sentence(err)})'
        raise DamagedCheckpoint.of(path, reason if crc else
                                   f'{reason}: the file is truncated or damaged') from None
    status = UNVERIFIED
    if verify and has_checksum(checkpoint):
        problem = checksum_problem(checkpoint)
        if problem:
            raise DamagedCheckpoint.of(path, problem + (f'; {crc}' if crc else ''))
        status = VERIFIED if checksum_algorithm(checkpoint) == ALGORITHM else VERIFIED_V1
    if crc:  # the checksum does not cover every record (or there is none): still damaged
        raise DamagedCheckpoint.of(path, crc)
    _statuses[digest] = status
    return checkpoint, status


def load_checkpoint_file(path: str, map_location='cpu'):
    """Load ``path`` (read once, zip CRCs checked, weights-only) without verifying its
    checksum; see :func:`load_verified_checkpoint`."""
    if not osp.isfile(osp.expanduser(path)):
        raise DamagedCheckpoint.of(path, 'no such file')
    return load_checkpoint_bytes_checked(read_checkpoint(path), path, map_location,
                                         verify=False)[0]


# sha256 of a file's bytes -> what its last load found: a file our tool checked before the
# Runner loads it is logged as verified without trusting its name, size or mtime
_statuses: Dict[str, str] = {}


def load_verified_checkpoint(path: str, map_location='cpu', return_status: bool = False,
                             trusted: Optional[bool] = None):
    """Load ``path`` and check its recorded checksum, if it has one.

    The file is read once; its zip CRCs and checksum are checked on the object loaded from
    those bytes. Raises :class:`DamagedCheckpoint` (one line) when the file does not load or
    changed; :class:`~mmnorm_plugin.checkpoint.loading.RefusedCheckpoint` (a
    ``pickle.UnpicklingError``) from an intact file whose content the weights-only load
    refuses: that is a decision for the user (``--unsafe-load PATH``), not damage to walk
    back from. ``return_status``: return ``(checkpoint, status)``. ``trusted`` (default: the
    user named ``path`` with ``--unsafe-load``): load with the full pickle machinery.
    """
    if not osp.isfile(osp.expanduser(path)):
        raise DamagedCheckpoint.of(path, 'no such file')
    checkpoint, status = load_checkpoint_bytes_checked(read_checkpoint(path), path,
                                                       map_location, trusted=trusted)
    return (checkpoint, status) if return_status else checkpoint


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from or evaluated; ``None`` when it loads and verifies.

    A file whose exact bytes loaded and verified before is not loaded again.
    ``pickle.UnpicklingError`` propagates, as from :func:`load_verified_checkpoint`.
    """
    if not osp.isfile(osp.expanduser(path)):
        return 'no such file'
    data = read_checkpoint(path)
    if hashlib.sha256(data).hexdigest() in _statuses:
        return None
    try:
        load_checkpoint_bytes_checked(data, path)
    except DamagedCheckpoint as err:
        return err.reason
    return None


def verification_status(path: str) -> Optional[str]:
    """What the last load of ``path``'s current bytes found (:data:`STATUS_TEXT` keys), or
    ``None`` when they were not loaded here."""
    if not osp.isfile(osp.expanduser(path)):
        return None
    return _statuses.get(hashlib.sha256(read_checkpoint(path)).hexdigest())


def was_verified(path: str) -> bool:
    """Whether ``path`` (its bytes as they are now) was loaded here and matched a recorded
    checksum."""
    return verification_status(path) in (VERIFIED, VERIFIED_V1)


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
