"""Count host synchronisations (device -> Python transfers) on any device, CPU included.

On a GPU every tensor -> Python conversion (``.item()``, ``int(t)``, ``bool(t)``, ``if t:``)
and every op whose output size depends on the data (``nonzero``, ``masked_select``...) waits
for the stream to drain. ``torch.cuda.set_sync_debug_mode`` reports them only on CUDA; this
module counts the same operations with a ``TorchDispatchMode``, so a CPU test can assert that
a training step is sync-free and a benchmark can print the count::

    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    with count_host_syncs() as syncs:
        model(x).sum().backward()
    print(syncs.total, dict(syncs.counts))

The mode sees the ops below autograd, backward included (the autograd engine propagates the
dispatch mode to the backward pass). What it cannot see: synchronising calls that are not
tensor ops (``torch.cuda.synchronize``, a CUDA event wait) and pinned-memory subtleties.
"""
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['HOST_SYNC_OPS', 'HostSyncCounter', 'count_host_syncs']

#: ops that transfer a value to the host (``item``/``is_nonzero`` normally decompose into
#: ``_local_scalar_dense`` before reaching the mode; listed in case a backend keeps them) or
#: whose output shape depends on tensor values
HOST_SYNC_OPS = frozenset({
    'aten::_local_scalar_dense', 'aten::item', 'aten::is_nonzero', 'aten::equal',
    'aten::nonzero', 'aten::masked_select', 'aten::_unique', 'aten::_unique2',
    'aten::unique_dim', 'aten::unique_consecutive', 'aten::unique_dim_consecutive',
})


class HostSyncCounter(TorchDispatchMode):
    """Dispatch mode counting the ops of :data:`HOST_SYNC_OPS` by schema name.

    Also counted: ``repeat_interleave`` with a tensor of repeats and no ``output_size`` (its
    output size is data-dependent), and copies from a non-CPU device to the CPU.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in HOST_SYNC_OPS:
            self.counts[name] += 1
        elif (name == 'aten::repeat_interleave' and func._overloadname in ('Tensor',
                                                                        'self_Tensor')
              and kwargs.get('output_size') is None):
            self.counts[name] += 1
        elif name in ('aten::_to_copy', 'aten::copy_'):
            src = args[1] if name == 'aten::copy_' else args[0]
            dst_device = (args[0].device if name == 'aten::copy_' else kwargs.get('device'))
            if (isinstance(src, Tensor) and src.device.type != 'cpu' and dst_device is not None
                    and str(dst_device).startswith('cpu')):
                self.counts['device->cpu copy'] += 1
        return func(*args, **kwargs)


@contextmanager
def count_host_syncs() -> Iterator[HostSyncCounter]:
    """Context manager yielding a :class:`HostSyncCounter` that counts inside the block."""
    mode = HostSyncCounter()
    with mode:
        yield mode
