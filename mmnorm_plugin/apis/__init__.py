from .mmdet_tools import load_mmdet_tool, run_mmdet_tool

__all__ = ['load_mmdet_tool', 'run_mmdet_tool']
