"""The 4conv1fc box head of the XBNBlock detection code: one ReLU after the fourth conv.

Huang et al., "Delving into the Estimation Shift of Batch Normalization in a Network", CVPR 2022,
arXiv 2203.10778; official detection code ``huangleiBuaa/XBNBlock`` (a maskrcnn-benchmark fork,
``FPNXconv1fcFeatureExtractor``).
"""
from mmdet.models.roi_heads.bbox_heads import Shared4Conv1FCBBoxHead
from mmdet.registry import MODELS

__all__ = ['Shared4Conv1FCLastReLUBBoxHead']


@MODELS.register_module()
class Shared4Conv1FCLastReLUBBoxHead(Shared4Conv1FCBBoxHead):
    r"""``Shared4Conv1FCBBoxHead`` with a single ReLU, after the last shared conv.

    mmdet's head (and Detectron's) applies ``conv -> norm -> ReLU`` four times. The XBNBlock
    fork's feature extractor stacks ``conv -> norm`` four times and applies one ReLU at the
    end, then ``fc -> ReLU``:

    .. math::
        h = \mathrm{ReLU}(N_4 C_4 N_3 C_3 N_2 C_2 N_1 C_1 x), \qquad
        f = \mathrm{ReLU}(W_{fc}\, \mathrm{flatten}(h) + b)

    (:math:`C_i` 3x3 convs, :math:`N_i` the ``norm_cfg`` norm or identity). The papers' 4conv1fc
    rows were trained with this head, so the configs that reproduce them use it. Without a norm
    the four convs compose to one linear map (the official BN-backbone baseline's head).

    Constructor, parameters and ``state_dict`` keys are exactly ``Shared4Conv1FCBBoxHead``'s
    (same ``ConvModule`` list, the three inner ones built without an activation), so checkpoints
    move between the two heads; only the function differs. Initialization is mmdet's (Kaiming
    for the convs, Xavier for the fc); the official code draws the convs from N(0, 0.01^2).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for conv in list(self.shared_convs)[:-1]:
            # ConvModule applies its activation only when with_activation is set; the module
            # itself holds no parameters, so dropping it leaves state_dict keys unchanged.
            conv.with_activation = False
            del conv.activate
