"""tools/python_env.sh picks the interpreter as documented; setup_env.sh refuses an unknown
torch variant before installing anything. (The full install into a fresh .venv is what CI's
`bash .ci/run` on a fresh clone exercises.)"""
import os
import os.path as osp
import subprocess
import sys

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
