"""Where a study record comes from: the code (git commit, dirty flag), the stack and the command.

Every table under ``docs/`` is built from JSON records; a row can only be rerun, or a
difference between two rows trusted, if its record names the code that produced it and the
command that did. The studies (:mod:`.norm_sweep`, :mod:`.small_batch_study`,
:mod:`.detection_study`) write :func:`provenance` into each record; their CLIs pass
:func:`command_line` so that the record also holds the command to rerun, from the repository
root.
"""
import hashlib
import os
import os.path as osp
import platform
import shlex
import subprocess
import sys
from typing import Dict, Optional, Sequence

__all__ = ['ROOT', 'PROVENANCE_KEYS', 'provenance', 'command_line']

#: the checkout the plugin is imported from (the commit recorded is this tree's HEAD)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: the keys :func:`provenance` adds to a record (``command`` only when one is given)
PROVENANCE_KEYS = ('commit', 'dirty', 'diff_sha256', 'diff', 'versions', 'python', 'machine',
                   'command')
_PACKAGES = ('torch', 'mmengine', 'mmcv', 'mmdet', 'numpy', 'mmnorm_plugin')


def _git(*args: str) -> str:
    """``git -C ROOT ...``'s output, '' where there is no git or no checkout (an installed
    package): the record then says ``commit: None`` rather than failing the study."""
    try:
        return subprocess.run(['git', '-C', ROOT, *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def _versions() -> Dict[str, Optional[str]]:
    versions = {}
    for module in _PACKAGES:
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 (a missing package is recorded, not fatal)
            versions[module] = None
    return versions


def provenance(command: Optional[str] = None, with_diff: bool = False) -> Dict:
    """Git commit of the plugin checkout and whether tracked files differ from it (``dirty``:
    the commit alone does not describe the code then, so ``diff_sha256`` names the exact
    difference, and ``with_diff`` stores it as ``diff``), package versions, Python, machine;
    and ``command`` (see :func:`command_line`) when given."""
    dirty = bool(_git('status', '--porcelain', '--untracked-files=no'))
    diff = _git('diff', 'HEAD') if dirty else ''
    record = dict(commit=_git('rev-parse', 'HEAD') or None, dirty=dirty,
                  diff_sha256=hashlib.sha256(diff.encode()).hexdigest() if dirty else None,
                  versions=_versions(), python=platform.python_version(),
                  machine=f'{platform.machine()}, {os.cpu_count()} CPUs')
    if dirty and with_diff:
        record['diff'] = diff
    if command is not None:
        record['command'] = command
    return record


def _from_root(arg: str) -> str:
    """A path inside the checkout as the command run from the root would spell it."""
    if osp.isabs(arg) and osp.abspath(arg).startswith(ROOT + os.sep):
        return osp.relpath(arg, ROOT)
    return arg


def command_line(script: str, argv: Optional[Sequence[str]] = None) -> str:
    """``python <script> <argv>``, shell-quoted, paths inside the checkout relative to its
    root: the command that reruns a record from the repository root (where the Makefile and
    the READMEs run the studies; other relative arguments are recorded as given). ``argv``
    defaults to this process's arguments (a CLI's ``main(argv=None)`` passes its own through).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(['python'] + [_from_root(a) for a in [osp.abspath(script), *args]])
