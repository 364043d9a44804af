"""Run mmdet 3.3's own ``tools/train.py`` / ``tools/test.py`` with the plugin loaded.

The pip wheel of mmdet ships its tools under ``mmdet/.mim/tools``; running them (rather than
keeping copies) keeps our CLI identical to mmdet's — ``--work-dir``, ``--amp``,
``--auto-scale-lr``, ``--resume``, ``--cfg-options``, ``--launcher``, ``--out``, ``--show-dir``,
``--tta`` ... — for every mmdet release we support. Before handing over, the config is loaded
once and every ``norm_cfg`` is validated, so an unknown norm type fails with the list of
registered choices instead of mmcv's ``Cannot find None in registry``.
"""
import os.path as osp
import runpy
from typing import Callable, Dict, Optional, Sequence
import sys

import mmdet
from mmengine.config import Config

from ..utils.norm_cfg import validate_norm_cfgs

__all__ = ['load_mmdet_tool', 'run_mmdet_tool']

MMDET_TOOLS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools')


def load_mmdet_tool(name: str) -> Dict[str, Callable]:
    """Return the namespace (``parse_args``, ``main``...) of ``mmdet/.mim/tools/<name>.py``."""
    path = osp.join(MMDET_TOOLS, f'{name}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: mmdet {mmdet.__version__} was installed without its '
            'tools (install the PyPI wheel `pip install mmdet==3.3.0`).')
    return runpy.run_path(path, run_name=f'mmdet_tools_{name}')


def run_mmdet_tool(name: str, argv: Optional[Sequence[str]] = None) -> None:
    """Validate the config named on the command line, then run mmdet's tool ``name``."""
    import mmnorm_plugin  # noqa: F401  (registrations and checkpoint allow-list)
    if argv is not None:
        sys.argv = [f'{name}.py', *argv]
    tool = load_mmdet_tool(name)
    args = tool['parse_args']()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if 'model' in cfg:
        validate_norm_cfgs(cfg.model, scope=cfg.get('default_scope', 'mmdet'))
    tool['main']()
