"""The fuzz harness (fuzz_checkpoint_loaders.py) within the CI budget: a few hundred derandomized
examples per target in a subprocess, so that a crash below Python fails on the return code.
A longer run: ``make fuzz FUZZ_EXAMPLES=5000``."""
import json
import os
import os.path as osp
import subprocess
import sys

HARNESS = osp.join(osp.dirname(osp.abspath(__file__)), 'fuzz_checkpoint_loaders.py')
TARGETS = ('opcode_streams', 'containers', 'config_text', 'weights_only_records',
           'tampered_bytes', 'guarded_loader')


def test_fuzz_every_checkpoint_loader(tmp_path):
    examples = int(os.environ.get('FUZZ_EXAMPLES', 300))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    proc = subprocess.run([sys.executable, HARNESS, '--examples', str(examples), '--json',
                           str(tmp_path / 'report.json')], capture_output=True, text=True,
                          timeout=1800, env=env)
    assert proc.returncode == 0, (f'rc {proc.returncode} (-11: SIGSEGV)\n'
                                  + proc.stdout[-4000:] + proc.stderr[-8000:])
    report = json.loads((tmp_path / 'report.json').read_text())['targets']
    assert set(report) == set(TARGETS)
    for name, result in report.items():
        assert result['tried'] == examples, (name, result)
        # each target reaches both sides: some inputs load, some are refused
        assert len(result['outcomes']) >= 2, (name, result)
