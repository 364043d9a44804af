"""Every ```python block of README.md, docs/*.md and configs/*/README.md runs as written: as a
config on top of mmdet's Faster R-CNN R50-FPN (unless it has its own ``_base_``), its norm
configs validate without warnings and the detector builds. Commented alternatives of the form
``# norm_cfg = ...`` / ``# norm_cfg, conv_cfg = ...`` are uncommented one at a time and built
too, so the README cannot offer a swap that does not work."""
import copy
import glob
import os.path as osp
import re
import warnings

import pytest
from mmcv.cnn import build_norm_layer
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.validation.norm_cfg import iter_norm_cfgs, validate_norm_cfgs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HEADER = ("_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'\n"
          "custom_imports = dict(imports=['mmnorm_plugin'], allow_failed_imports=False)\n")
ALTERNATIVE = re.compile(r'^# ((?:norm_cfg|conv_cfg)\b.*=.*)$', re.M)


def _blocks():
    cases = []
    readmes = [osp.join(ROOT, 'README.md')] + sorted(
        glob.glob(osp.join(ROOT, 'docs', '*.md'))) + sorted(
        glob.glob(osp.join(ROOT, 'configs', '*', 'README.md')))
    for path in readmes:
        text = open(path).read()
        for i, block in enumerate(re.findall(r'```python\n(.*?)```', text, re.S)):
            name = f'{osp.relpath(path, ROOT)}#{i}'
            cases.append(pytest.param(block, id=name))
            for j, line in enumerate(ALTERNATIVE.findall(block)):
                variant = block.replace(f'# {line}', line, 1)
                cases.append(pytest.param(variant, id=f'{name}-alt{j}'))
    return cases


def test_the_readmes_have_snippets():
    assert len(_blocks()) >= 6


@pytest.mark.parametrize('snippet', _blocks())
def test_readme_snippet_builds(snippet, tmp_path):
    from mmdet.registry import MODELS
    source = snippet if '_base_' in snippet else HEADER + snippet
    path = tmp_path / 'snippet.py'
    path.write_text(source)
    cfg = Config.fromfile(str(path))
    init_default_scope('mmdet')
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)  # e.g. MABN without CenConv2d
        validate_norm_cfgs(cfg.to_dict(), scope='mmdet')
    # norm configs defined for later use (top-level norm_cfg) must build on their own too
    for _, norm_cfg in iter_norm_cfgs({k: v for k, v in cfg.to_dict().items() if k != 'model'}):
        build_norm_layer(copy.deepcopy(norm_cfg), 64)
    MODELS.build(cfg.model)
