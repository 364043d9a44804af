"""One rank of a gloo process group, for the tests' ``run_ranks`` fixture (tests/conftest.py).

    python tests/gloo_worker.py RANK WORLD PORT TEST_FILE FUNCTION OUT

Joins the group, loads ``TEST_FILE`` by path (the suite runs with ``--import-mode=importlib``,
so test modules are not importable by name), calls ``FUNCTION(rank, world_size)`` and saves
what it returns with ``torch.save`` to ``OUT``. Counts the all-reduces the function issues
(``result['_all_reduce_calls']``) and records each one's ``(numel, dtype)``
(``result['_all_reduce_sizes']``).
"""
import importlib.util
import os
import sys

import torch
import torch.distributed as dist


def main(rank: str, world: str, port: str, test_file: str, function: str, out: str) -> None:
    from mmnorm_plugin.apis.dist import close_cpu_process_group
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=int(rank),
                            world_size=int(world))
    calls = [0]
    sizes = []  # (numel, dtype) of every all-reduce: the bytes on the wire
    reduce = dist.all_reduce

    def counting_all_reduce(tensor, *args, **kwargs):
        calls[0] += 1
        sizes.append((tensor.numel(), tensor.dtype))
        return reduce(tensor, *args, **kwargs)

    dist.all_reduce = counting_all_reduce
    succeeded = False
    try:
        spec = importlib.util.spec_from_file_location('ranked_test_module', test_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        result = getattr(module, function)(int(rank), int(world))
        result = dict(result or {}, _all_reduce_calls=calls[0], _all_reduce_sizes=sizes)
        torch.save(result, out)
        succeeded = True
    finally:
        dist.all_reduce = reduce
        # as our tools do: a group left to interpreter exit can abort a rank that succeeded
        close_cpu_process_group(run_succeeded=succeeded)


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(*sys.argv[1:])
