"""The GPU check (issue 22): one command that, on a lent accelerator, checks and measures every
norm and writes a JSON summary and a table. ``DEVICE=cpu`` runs the same parts on the CPU at
small sizes (CI runs it: ``tests/test_tools/test_gpu_check.py``).

Parts (:data:`PARTS`, each with its share of the time budget, :data:`SHARES`):

* ``correctness``: every norm and synced variant (world size 1, no process group), SGD steps
  of a small network in float32 on the device against the CPU in float64 and float32 (forward
  output, gradients, losses, state), synced variants also against their unsynced layer;
* ``amp``: bf16 and fp16 autocast steps: finite, float32 state, close to float32;
* ``host_syncs``: warm training steps with no host synchronisation (counted by
  :mod:`mmnorm_plugin.benchmarks.sync_count`; on CUDA also ``torch.cuda.set_sync_debug_mode``);
* ``layer_bench``: norm and conv+norm fwd+bwd timed (CUDA events) against BN and GN at FPN and
  RoI shapes, fp32 and bf16; CBN's layer against its floor; device launches per norm;
* ``compile``: ``torch.compile`` training steps equal to eager, graph breaks, speed;
* ``model``: a ResNet-50 + FPN training step (mmdet modules) per norm against BN/GN twins.

The command line is ``tools/gpu_check/gpu_check.py`` (``make gpu-check``), which first stands
in for ``mmcv._ext`` when mmcv was built without ops (the device machine gets such an mmcv as a
wheel; see ``docs/gpu_check.md``). Importing this package needs mmengine, mmcv and mmdet.
"""
from .kit import PARTS, SCHEMA, SHARES, KitConfig, environment, format_table, part_status, run_kit
from .parts import TOLERANCES

__all__ = ['PARTS', 'SCHEMA', 'SHARES', 'KitConfig', 'environment', 'format_table',
           'part_status', 'run_kit', 'TOLERANCES']
