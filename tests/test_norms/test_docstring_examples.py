"""The Examples sections of the norms' docstrings run as written (doctest)."""
import doctest

import pytest
import torch
from torch import nn

from mmnorm_plugin.norms import bgn, bkn, cbn, mabn


@pytest.mark.parametrize('module', [cbn, bgn, mabn, bkn], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    torch.manual_seed(0)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, globs=dict(vars(module), torch=torch, nn=nn))
             if t.examples]
    assert tests, f'{module.__name__} has no docstring example'
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f'{runner.failures} docstring example(s) failed (see stdout)'
