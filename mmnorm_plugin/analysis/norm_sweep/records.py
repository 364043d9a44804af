"""Sweep records: one JSON file per finished arm-seed, validated whenever it is read.

A record is data from a file, possibly someone else's (a report JSON committed under ``docs/``,
a sweep directory copied from another machine): nothing in it is trusted before
:func:`check_record` has seen it. Arm names and seeds become file names, so only names of
letters, digits, ``_``, ``+`` and ``-`` followed by ``@`` and a batch size pass, and paths are
built from those validated fields alone (:func:`record_path`). Metrics must be finite COCO
fractions (``-1`` is COCO's "no object of that size"); one arm-seed recorded twice with other
values is refused rather than one of them silently winning. Every refusal is one line
(:class:`RecordError`) naming the file and the record.
"""
import glob
import json
import math
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ['RecordError', 'check_record', 'record_path', 'import_records', 'load_records',
           'merge_records', 'arm_key']

#: ``NORM@BATCH``: a norm name a file name can hold, and a positive batch size
_ARM = re.compile(r'([A-Za-z][A-Za-z0-9_+-]{0,63})@([1-9][0-9]{0,4})')
_METRIC = re.compile(r'[A-Za-z][A-Za-z0-9_]{0,63}(/[A-Za-z0-9_]{1,64}){0,3}')
_COMMIT = re.compile(r'[0-9a-f]{40}')
_MAX_SEED = 2 ** 31 - 1
#: a record's ``cost``, as :func:`.cost.run_cost` reads it from the training logs
COST_FIELDS = ('sessions', 'iterations', 'iteration_seconds', 'evaluations',
               'evaluation_seconds', 'session_seconds')


class RecordError(ValueError):
    """A record (or the file holding it) that is not a valid sweep record; one line."""


def arm_key(name: str) -> Tuple[str, int]:
    """``'CBN@1'`` -> ``('CBN', 1)``; raises :class:`RecordError` for any other shape."""
    match = _ARM.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise RecordError(f'arm {name!r} is not NORM@BATCH (a name of letters, digits, _ + -, '
                          'and a positive number of images per batch)')
    return match.group(1), int(match.group(2))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metrics(metrics, what: str) -> None:
    if not isinstance(metrics, dict) or not metrics:
        raise RecordError(f'{what} is not a non-empty object of metrics')
    for key, value in metrics.items():
        if not _METRIC.fullmatch(key):
            raise RecordError(f'{what}: metric name {key!r} is not a plain identifier')
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(f'{what}: metric {key!r} is {value!r}, not a number')
        if not math.isfinite(value) or not (0.0 <= value <= 1.0 or value == -1.0):
            raise RecordError(f'{what}: metric {key!r} is {value!r}, outside [0, 1] (COCO '
                              'metrics are fractions; -1 means no object of that size)')


def _is_amount(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def check_record(record, where: str = 'record') -> Dict:
    """Return ``record`` if it is a valid sweep record, else raise :class:`RecordError` naming
    ``where`` (e.g. ``'docs/x.json: record 3'``) and the first problem found."""
    if not isinstance(record, dict):
        raise RecordError(f'{where}: a record is a JSON object, got {type(record).__name__}')
    for key in ('arm', 'seed', 'metrics'):
        if key not in record:
            raise RecordError(f'{where}: no {key!r}')
    try:
        norm, batch = arm_key(record['arm'])
    except RecordError as err:
        raise RecordError(f'{where}: {err}') from None
    seed = record['seed']
    if not _is_int(seed) or not 0 <= seed <= _MAX_SEED:
        raise RecordError(f'{where}: seed {seed!r} is not an integer in [0, {_MAX_SEED}]')
    where = f"{where} ({record['arm']} seed {seed})"
    if record.get('norm', norm) != norm:
        raise RecordError(f"{where}: norm {record['norm']!r} differs from the arm's {norm!r}")
    if record.get('images_per_batch', batch) != batch:
        raise RecordError(f"{where}: images_per_batch {record['images_per_batch']!r} differs "
                          f"from the arm's {batch}")
    _check_metrics(record['metrics'], f'{where}: metrics')
    for key in ('dirty', 'no_detections'):
        if key in record and not isinstance(record[key], bool):
            raise RecordError(f'{where}: {key} is {record[key]!r}, not true/false')
    commit = record.get('commit')
    if commit is not None and not (isinstance(commit, str) and _COMMIT.fullmatch(commit)):
        raise RecordError(f'{where}: commit {commit!r} is not a 40-digit git hash')
    cost = record.get('cost')
    if cost is not None and not (
            isinstance(cost, dict) and set(cost) == set(COST_FIELDS)
            and all(_is_amount(v) or (k == 'evaluation_seconds' and v is None)
                    for k, v in cost.items())):
        raise RecordError(f'{where}: cost is not {{{", ".join(COST_FIELDS)}}} of finite '
                          'non-negative numbers')
    curve = record.get('curve')
    if curve is not None:
        if not isinstance(curve, list):
            raise RecordError(f'{where}: curve is not a list of evaluations')
        last = -1
        for i, point in enumerate(curve):
            if not isinstance(point, dict) or not _is_int(point.get('step')) or \
                    point['step'] <= last:
                raise RecordError(f'{where}: curve point {i} has no step after {last}')
            last = point['step']
            _check_metrics(point.get('metrics'), f'{where}: curve point {i}')
    return record


def record_path(out_dir: str, arm: str, seed: int) -> str:
    """Where the record of ``arm`` (``NORM@BATCH``) and ``seed`` lives under ``out_dir``; the
    name is built from the validated arm and seed only, so it stays inside ``out_dir``."""
    norm, batch = arm_key(arm)
    if not _is_int(seed) or not 0 <= seed <= _MAX_SEED:
        raise RecordError(f'seed {seed!r} is not an integer in [0, {_MAX_SEED}]')
    return osp.join(out_dir, 'records', f'{norm}@{batch}_seed{seed}.json')


def _unique(records: Sequence[Dict], source: str) -> List[Dict]:
    """One record per arm-seed: an exact repeat is dropped, a repeat with other metrics is
    refused (which one is right cannot be told)."""
    seen: Dict[Tuple[str, int], Dict] = {}
    out = []
    for rec in records:
        key = (rec['arm'], rec['seed'])
        if key in seen:
            if seen[key]['metrics'] != rec['metrics']:
                raise RecordError(f'{source}: {key[0]} seed {key[1]} is recorded twice with '
                                  'different metrics')
            continue
        seen[key] = rec
        out.append(rec)
    return out


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f'{path}: not readable as JSON ({err})') from None


def load_records(source: str) -> List[Dict]:
    """Records from a sweep directory (``records/*.json``, each file named for its record) or
    a report JSON (its ``records``), each validated (:func:`check_record`); raises
    :class:`RecordError` on the first problem."""
    if osp.isfile(source):
        report = _read_json(source)
        if not isinstance(report, dict) or not isinstance(report.get('records'), list):
            raise RecordError(f'{source}: a report JSON is an object with a "records" list')
        return _unique([check_record(rec, f'{source}: record {i}')
                        for i, rec in enumerate(report['records'])], source)
    records = []
    for path in sorted(glob.glob(osp.join(source, 'records', '*.json'))):
        rec = check_record(_read_json(path), path)
        if osp.basename(record_path('', rec['arm'], rec['seed'])) != osp.basename(path):
            raise RecordError(f"{path}: holds {rec['arm']} seed {rec['seed']}, which is not "
                              'what its file name says')
        records.append(rec)
    return _unique(records, source)


def import_records(records: Sequence[Dict], out_dir: str) -> int:
    """Write records (e.g. from a committed report JSON) that ``out_dir`` lacks into
    ``out_dir/records``, verbatim, so that a sweep on a fresh machine never recomputes them;
    return how many were added. Every record is validated before any is written."""
    records = [check_record(rec, f'record {i}') for i, rec in enumerate(records)]
    added = 0
    for rec in records:
        path = record_path(out_dir, rec['arm'], rec['seed'])
        if not osp.isfile(path):
            os.makedirs(osp.dirname(path), exist_ok=True)
            with open(path + '.tmp', 'w') as f:
                json.dump(rec, f, indent=1)
            os.replace(path + '.tmp', path)
            added += 1
    return added


def merge_records(own: Sequence[Dict], extra: Sequence[Dict],
                  arms: Optional[Sequence[str]] = None) -> List[Dict]:
    """``own`` plus the records of ``extra`` (e.g. a committed grid's BN@1 rows that a study
    of variants pairs with) whose arm is in ``arms`` (all if None); an arm-seed ``own``
    already has is kept from ``own``. Each record keeps its commit, so the report says which
    rows were paired across commits."""
    have = {(r['arm'], r['seed']) for r in own}
    wanted = set(arms) if arms else None
    unknown = sorted(wanted - {r['arm'] for r in extra}) if wanted else []
    if unknown:
        raise ValueError(f'no records of {unknown} in the extra source (it has '
                         f"{sorted({r['arm'] for r in extra})})")
    return list(own) + [r for r in extra if (wanted is None or r['arm'] in wanted)
                        and (r['arm'], r['seed']) not in have]
