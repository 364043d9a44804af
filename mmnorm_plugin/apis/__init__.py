from .dist import AnyDeviceDDP, init_cpu_process_group, needs_cpu_dist, use_cpu_ddp
from .inference import init_detector_verified
from .mmdet_tools import (add_plugin_import, check_test_checkpoint, load_mmdet_tool,
                          run_mmdet_tool)

__all__ = ['load_mmdet_tool', 'run_mmdet_tool', 'add_plugin_import', 'check_test_checkpoint',
           'init_detector_verified', 'AnyDeviceDDP', 'init_cpu_process_group', 'needs_cpu_dist',
           'use_cpu_ddp']
