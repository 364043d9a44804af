"""The commands of docs/beyond_detection.md's segmentation section run as written: mmseg's own
``tools/train.py``/``test.py`` and ours train the tiny segmentation config and report mIoU.

The commands are read from the page (every ``python`` line and the ``MMSEG_TOOLS=`` line of its
shell blocks; ``make``/install lines are what the fixture and the environment provide) and run
in one shell from a scratch folder holding ``configs``/``tools`` links and a small copy of the
neutral set at the config's ``data/photo_digits``. Training lines get ``--cfg-options`` for 4
iterations; nothing else is changed.
"""
import math
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

pytest.importorskip('mmseg', reason='mmsegmentation is the .[seg] extra')

from mmnorm_plugin.datasets.photo_digits_seg import make_photo_digits_seg  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PAGE = osp.join(ROOT, 'docs', 'beyond_detection.md')
SECTION = '## Semantic segmentation (mmseg)'
SHORT = (' --cfg-options train_cfg.max_iters=4 train_cfg.val_interval=4 '
         'param_scheduler.0.end=4 default_hooks.checkpoint.interval=4')


def _commands():
    text = open(PAGE).read()
    assert SECTION in text
    section = text.split(SECTION, 1)[1].split('\n## ', 1)[0]
    lines = []
    for block in re.findall(r'```shell\n(.*?)```', section, re.S):
        lines += [line.strip() for line in block.splitlines()
                  if line.strip().startswith(('python ', 'MMSEG_TOOLS='))]
    return lines


def test_readme_gives_the_tested_commands():
    text = open(osp.join(ROOT, 'README.md')).read()
    tested = r'<!-- tested: tests/test_tools/test_mmseg_tools_e2e.py -->\s*```shell\n(.*?)```'
    blocks = re.findall(tested, text, re.S)
    assert len(blocks) == 1, blocks
    readme = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    assert readme == [line for line in _commands() if line.startswith('python tools/')]


def test_the_page_runs_both_tool_pairs():
    lines = _commands()
    assert lines[0].startswith('MMSEG_TOOLS=')
    tools = [re.match(r'python (\S+)', line).group(1) for line in lines[1:]]
    assert tools == ['$MMSEG_TOOLS/train.py', '$MMSEG_TOOLS/test.py', 'tools/train.py',
                     'tools/test.py']


@pytest.mark.slow  # four fresh processes, each imports torch, mmdet and mmseg (2-3 min)
def test_documented_mmseg_commands_train_and_report_miou(tmp_path):
    make_photo_digits_seg(str(tmp_path / 'data' / 'photo_digits'), num_train=8, num_val=4)
    for name in ('configs', 'tools'):
        os.symlink(osp.join(ROOT, name), tmp_path / name)
    script = ['set -euo pipefail']
    for line in _commands():
        script.append(f'echo "=== {line}"')
        script.append(line + (SHORT if re.search(r'train\.py ', line) else ''))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1',
               PATH=osp.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    proc = subprocess.run(['bash', '-c', '\n'.join(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    results = re.findall(r'Iter\(test\) \[4/4\].*?mIoU: ([\d.na]+)', out)
    assert len(results) == 2, out[-6000:]  # mmseg's test.py and ours
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in results), results
    for work_dir in ('seg_tiny', 'seg_tiny_ours'):
        last = (tmp_path / 'work_dirs' / work_dir / 'last_checkpoint').read_text().strip()
        assert last.endswith('iter_4.pth') and osp.isfile(osp.join(tmp_path, last))
    # our test.py read through the guarded loader, mmseg's through torch's weights-only default
    assert 'mmnorm-guarded://' in out
