"""tools/python_env.sh picks the interpreter as documented; setup_env.sh refuses an unknown
torch variant before installing anything. (The full install into a fresh .venv is what CI's
`bash .ci/run` on a fresh clone exercises.)"""
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _bash(script, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ('PYTHON', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'MMNORM_VENV')}
    return subprocess.run(['bash', '-c', script], cwd=ROOT, env=dict(base, **env),
                          capture_output=True, text=True, timeout=120)


def _chosen(**env):
    proc = _bash('source tools/python_env.sh && echo "PY=$PY PYTHON=$PYTHON"', **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_python_env_choices(tmp_path):
    assert _chosen(PYTHON='/opt/py/bin/python') == 'PY=/opt/py/bin/python PYTHON=/opt/py/bin/python'
    assert _chosen(VIRTUAL_ENV='/some/venv') == 'PY=python PYTHON=python'
    assert _chosen(MMNORM_VENV='0') == 'PY=python3 PYTHON=python3'
    # an existing venv elsewhere is used and put first on PATH (no creation needed)
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'python').symlink_to(sys.executable)
    proc = _bash('source tools/python_env.sh && echo "$PY|$VIRTUAL_ENV|$(command -v python)"',
                 MMNORM_VENV=str(venv))
    assert proc.stdout.strip() == f'{venv}/bin/python|{venv}|{venv}/bin/python'


def test_unknown_torch_variant_is_refused_before_installing():
    proc = _bash('bash tools/setup_env.sh', PYTHON=sys.executable, TORCH_VARIANT='cuda')
    assert proc.returncode == 2
    assert 'TORCH_VARIANT=cuda: use cpu, a CUDA tag such as cu126, or pypi' in proc.stderr
    assert 'installing' not in proc.stdout


def _no_torch_path(tmp_path):
    """A PATH whose `python`/`python3` come first and cannot import torch (a system Python,
    a pyenv shim without the stack): the real interpreter without its site-packages."""
    fake = tmp_path / 'fakebin'
    fake.mkdir()
    for name in ('python', 'python3'):
        (fake / name).write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
        (fake / name).chmod(0o755)
    return f'{fake}:{os.environ["PATH"]}'


def _venv(tmp_path):
    """A set-up venv: bin/python runs the interpreter that has the stack."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'python').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / 'bin' / 'python').chmod(0o755)
    return venv


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def test_dist_train_uses_the_set_up_venv_when_path_python_lacks_torch(tmp_path):
    path = _no_torch_path(tmp_path)
    assert _bash('python3 -c "import torch"', PATH=path).returncode != 0  # the premise
    proc = _bash('bash tools/dist_train.sh missing.py 1', PATH=path,
                 MMNORM_VENV=str(_venv(tmp_path)), PORT=_free_port(), OMP_NUM_THREADS='1')
    # torchrun started tools/train.py, which got as far as checking its arguments
    assert 'train.py: config file not found: missing.py' in proc.stderr, proc.stderr[-3000:]
    assert 'does not have the stack' not in proc.stderr


def test_dist_train_without_a_set_up_python_says_what_to_activate(tmp_path):
    missing_venv = tmp_path / 'no_venv'
    proc = _bash('bash tools/dist_train.sh missing.py 1', PATH=_no_torch_path(tmp_path),
                 MMNORM_VENV=str(missing_venv))
    assert proc.returncode == 1
    assert 'python3' in proc.stderr and 'does not have the stack (torch, mmdet)' in proc.stderr
    assert 'bash tools/setup_env.sh' in proc.stderr and 'source .venv/bin/activate' in proc.stderr
    assert 'PYTHON=/path/to/python bash tools/dist_train.sh' in proc.stderr
    assert not missing_venv.exists()  # an entry point never creates an empty venv
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('script, args', [
    ('slurm_train.sh', ['PART', 'JOB', 'CONFIG', 'WORK_DIR']),
    ('slurm_test.sh', ['PART', 'JOB', 'CONFIG', 'CKPT']),
])
def test_slurm_scripts_run_the_set_up_python_on_the_nodes(tmp_path, script, args):
    path = _no_torch_path(tmp_path)
    (tmp_path / 'fakebin' / 'srun').write_text('#!/bin/sh\necho "srun $*"\n')
    (tmp_path / 'fakebin' / 'srun').chmod(0o755)
    venv = _venv(tmp_path)
    proc = _bash(f'bash tools/{script} {" ".join(args)}', PATH=path, MMNORM_VENV=str(venv))
    assert proc.returncode == 0, proc.stderr
    assert f' {venv}/bin/python -u ' in proc.stdout, proc.stdout
