"""Conversion between a norm and its synced variant (what ``nn.SyncBatchNorm`` does for BN)."""
import inspect

import torch

__all__ = ['convert_norm', 'synced_variant_of']


def convert_norm(module: torch.nn.Module, cls: type, expected: type,
                 **overrides) -> torch.nn.Module:
    """``module`` (an ``expected``) as a layer of class ``cls``: a norm and its synced variant.

    The new layer gets ``module``'s hyperparameters (every constructor argument of ``cls``
    that ``module`` holds as an attribute of the same name, then ``overrides``), device,
    dtype and train/eval mode, and holds ``module``'s very parameters and buffers, as
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` does (an optimizer built on ``module`` keeps
    working; replace ``module`` by the result rather than using both). State kept outside
    registered buffers (CBN's windows) is copied through ``load_state_dict``.
    """
    if not isinstance(module, expected):
        raise TypeError(f'{cls.__name__}: expected a {expected.__name__} layer, got '
                        f'{type(module).__name__}')
    skip = ('self', 'device', 'dtype')
    kwargs = {name: getattr(module, name)
              for name, arg in inspect.signature(cls).parameters.items()
              if name not in skip and arg.kind in (arg.POSITIONAL_OR_KEYWORD, arg.KEYWORD_ONLY)
              and hasattr(module, name)}
    kwargs.update(overrides)
    like = next((t for t in list(module.parameters()) + list(module.buffers())
                 if t.is_floating_point()), None)
    factory = {} if like is None else dict(device=like.device, dtype=like.dtype)
    new = cls(**kwargs, **factory)
    new.load_state_dict(module.state_dict())
    for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
        setattr(new, name, tensor)
    return new.train(module.training)


def synced_variant_of(base: type):
    """Class decorator for a synced variant ``cls(base)`` whose ``__init__`` is
    ``(self, num_features, *args, process_group=None, **kwargs)``: its public signature
    (``inspect.signature(cls)``) becomes ``base``'s plus ``process_group``, so the norm-config
    validator checks every argument, :func:`convert_norm` carries every hyperparameter over,
    and the argument list is written once."""

    def decorate(cls):
        signature = inspect.signature(base)
        group = inspect.Parameter('process_group', inspect.Parameter.KEYWORD_ONLY, default=None)
        cls.__signature__ = signature.replace(
            parameters=list(signature.parameters.values()) + [group])
        return cls

    return decorate
