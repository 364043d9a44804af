import os

import pytest
import torch

# Tests are CPU-bound on a 2-core machine: one intra-op thread keeps parallel jobs from
# oversubscribing and keeps float reductions deterministic.
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
