"""mmdet's ``init_detector`` with the checkpoint loaded through the guarded loader.

``mmdet.apis.init_detector(config, 'x.pth')`` loads the file with mmengine's local loader:
torch's weights-only default (no code from pickles) but no checksum, and old-format Runner
checkpoints fail. :func:`init_detector_verified` passes the ``mmnorm-guarded://`` name instead
(:mod:`mmnorm_plugin.engine.guarded_loading`): zip CRCs and checksum verified on the bytes
loaded, one-line refusals naming the file. ``DetInferencer`` takes the same name
(``weights=guarded(path)``); give it the config too, since without one mmengine executes the
checkpoint's saved config text (``meta['cfg']``).
"""
from ..engine.guarded_loading import guarded

__all__ = ['init_detector_verified', 'guarded']


def init_detector_verified(config, checkpoint: str, device: str = 'cuda:0', **kwargs):
    """``mmdet.apis.init_detector(config, checkpoint, device, **kwargs)``, with ``checkpoint``
    (a path or URL) loaded, verified and checked by the guarded loader."""
    from mmdet.apis import init_detector
    return init_detector(config, guarded(checkpoint), device=device, **kwargs)
