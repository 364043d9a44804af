"""The GPU check: one command that checks and measures every norm on a GPU and writes a JSON
summary and a table (``docs/gpu_check.md``). ``DEVICE=cpu`` runs the same parts on the CPU at
small sizes (``tests/test_tools/test_gpu_check.py`` runs it).

The parts, in run order (:data:`.parts.REGISTRY`; each declared once in its module under
``parts/`` with its name, share of the time budget, run and table rows):

* ``correctness``: every norm and synced variant (world size 1, no process group), SGD steps
  of a small network in float32 on the device against the CPU in float64 and float32 (forward
  output, gradients, losses, state), synced variants also against their unsynced layer;
* ``amp``: bf16 and fp16 autocast steps: finite, float32 state, close to float32;
* ``host_syncs``: warm training steps with no host synchronisation (counted by
  :mod:`mmnorm_plugin.benchmarks.sync_count`; on CUDA also ``torch.cuda.set_sync_debug_mode``);
* ``layer_bench``: norm and conv+norm fwd+bwd timed (CUDA events) against BN and GN at FPN and
  RoI shapes, fp32 and bf16; CBN's layer against its floor; device launches per norm;
* ``model``: a ResNet-50 + FPN training step (mmdet modules) per norm against BN/GN twins;
* ``compile``: ``torch.compile`` training steps equal to eager, graph breaks, speed.

The command line is ``tools/gpu_check/gpu_check.py`` (``make gpu-check``), which first stands
in for ``mmcv._ext`` when mmcv was built without its compiled ops (see ``docs/gpu_check.md``).
Importing this package needs mmengine, mmcv and mmdet.
"""
from .kit import (PARTS, SCHEMA, SHARES, KitConfig, check_parts, environment, format_table,
                  part_status, run_kit)
from .parts import REGISTRY, TOLERANCES, Part

__all__ = ['PARTS', 'SCHEMA', 'SHARES', 'KitConfig', 'environment', 'format_table',
           'part_status', 'run_kit', 'check_parts', 'TOLERANCES', 'REGISTRY', 'Part']
