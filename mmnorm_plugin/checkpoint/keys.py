"""Which state-dict entries are training-only norm state (CBN windows, MABN rings).

Used by the release converter (:mod:`mmnorm_plugin.model_converters.release`, which strips them) and
by ``tools/test.py``'s checkpoint check (:mod:`mmnorm_plugin.checkpoint.loading`, which does not
compare them); kept here so that neither imports the other.
"""
from typing import Iterable, List

__all__ = ['is_training_only_key', 'training_only_keys']

# buffer -> the sibling buffer that identifies its layer type
_CBN_SIGNATURE = 'hist_mean'
_CBN_COUNTERS = ('num_iters', 'hist_len', 'hist_ptr')
_MABN_RINGS = {'chi2_history': 'psi_history', 'psi_history': 'chi2_history'}


def is_training_only_key(key: str, keys) -> bool:
    """Whether state-dict entry ``key`` is CBN/MABN training-only state (``keys``: all keys)."""
    prefix, _, name = key.rpartition('.')
    layer = f'{prefix}.' if prefix else ''
    if name.startswith('hist_') or name in _CBN_COUNTERS:
        # a CBN that has not trained yet saves its counter but no window
        return (f'{layer}{_CBN_SIGNATURE}' in keys
                or name == 'num_iters' and f'{layer}running_mean' in keys)
    if name in _MABN_RINGS:
        return f'{layer}{_MABN_RINGS[name]}' in keys
    return False


def training_only_keys(keys: Iterable[str]) -> List[str]:
    keys = set(keys)
    return sorted(k for k in keys if is_training_only_key(k, keys))
