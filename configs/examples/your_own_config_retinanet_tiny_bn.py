# docs/your_own_config.md: the example with BN instead of CBN. Two things a child config must do
# to swap a norm it inherits:
# * set it in every model part: the base's `norm_cfg = ...` line was substituted into the model
#   when the base was read, so redefining the variable here changes no layer;
# * `_delete_=True`: a child's dict is merged key by key into the base's, so without it the
#   model would keep CBN's buffer_num, which BN does not take.
_base_ = './your_own_config_retinanet_tiny.py'

norm_cfg = dict(_delete_=True, type='BN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    bbox_head=dict(norm_cfg=norm_cfg))
