"""The parts of the GPU check, each declared once in its own module as a
:class:`~.base.Part` (name, time share, run, table rows).

A new part is a module with its ``PART`` and one entry in :data:`REGISTRY`: that puts it in
the run (``--parts`` accepts its name), in the JSON's ``parts`` and in the table. A part's
``run`` loops over its items with :func:`~.base.run_items`, which checks the budget, records
an exception on its item, saves the JSON and logs; the sizes it needs are fields of
:class:`~mmnorm_plugin.gpu_check.kit.KitConfig`."""
from . import amp, correctness, host_syncs, layer_bench, model, torch_compile
from .base import AMP_DTYPES, TOLERANCES, Context, Part, run_items

__all__ = ['REGISTRY', 'Part', 'Context', 'run_items', 'TOLERANCES', 'AMP_DTYPES']

#: every part, in run order. ``compile`` last: one Inductor compile can overrun its share by
#: minutes (a norm that recompiles every step), which then delays nothing else
REGISTRY = (
    correctness.PART,
    amp.PART,
    host_syncs.PART,
    layer_bench.PART,
    model.PART,
    torch_compile.PART,
)
