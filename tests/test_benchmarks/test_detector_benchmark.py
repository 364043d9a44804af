"""The detector benchmark builds the right detectors and its deployed models are equivalent."""
import torch
from torch import nn

from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.mabn import MABN
from mmnorm_plugin.benchmarks import detector_benchmark as db


def test_detectors_compared_have_the_norms_in_the_right_places():
    models = db.build_detectors(('bgn', 'mabn'))
    assert set(models) == {'BGN', 'MABN', 'BN twin', 'frozen BN'}
    for name, kind in (('BGN', BGN), ('MABN', MABN), ('BN twin', nn.BatchNorm2d)):
        model = models[name]
        for part in (model.backbone, model.neck, model.roi_head.bbox_head):
            assert any(type(m) is kind for m in part.modules()), (name, part)
    frozen = models['frozen BN']
    assert frozen.backbone.norm_eval
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for part in (frozen.neck, frozen.roi_head) for m in part.modules())
    # steady state: MABN averages and renormalizes from the first iteration
    mabn = next(m for m in models['MABN'].modules() if isinstance(m, MABN))
    assert mabn.warmup_iters == 0 and mabn.renorm_hold_iters == 0


def test_compare_detectors_rows_and_deployed_equivalence():
    from mmdet.testing import demo_mm_inputs
    rows = db.compare_detectors(('bgn',), image_size=(64, 64), iters=3, warmup=0)
    names = {(r['mode'], r['name']) for r in rows}
    assert ('train', 'BGN') in names and ('infer', 'BGN deployed') in names
    assert all(r['ms'] > 0 for r in rows)
    twin = [r for r in rows if r['name'] == 'BN twin folded'][0]
    assert twin['x_twin'] == 1.0

    model = db.build_detectors(('bgn',))['BGN'].eval()
    deployed = db._deployed(model)
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)], num_classes=3)
    with torch.no_grad():
        a = model.extract_feat(model.data_preprocessor(packed, False)['inputs'])
        b = deployed.extract_feat(deployed.data_preprocessor(packed, False)['inputs'])
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_a_whole_cbn_detector_trains_compiled_fullgraph_as_it_does_eager():
    # CBN is the norm dynamo found hardest (autograd metadata, weight versions): its backbone,
    # FPN and box head compile with fullgraph=True (a graph break raises) and the compiled
    # detector's losses and updated weights follow the eager twin's step for step
    import copy
    from mmdet.testing import demo_mm_inputs
    from mmengine.optim import OptimWrapper
    from mmnorm_plugin.norms.cbn import CBN
    eager = db.build_detectors(('cbn',))['CBN'].train()
    assert any(isinstance(m, CBN) for m in eager.backbone.modules())
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 64)], num_items=[2],
                            num_classes=3)
    eager_optim = OptimWrapper(torch.optim.SGD(eager.parameters(), lr=1e-3, momentum=0.9))
    model, model_optim = db.compiled_twin(eager, eager_optim, packed, backend='aot_eager')
    try:
        for step in range(3):
            torch.manual_seed(step)
            want = eager.train_step(copy.deepcopy(packed), eager_optim)
            torch.manual_seed(step)
            got = model.train_step(copy.deepcopy(packed), model_optim)
            for key in want:
                torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    finally:
        torch._dynamo.reset()
    assert type(model.backbone).__name__ == 'OptimizedModule'
    torch.testing.assert_close(model.neck._orig_mod.fpn_convs[0].conv.weight,
                               eager.neck.fpn_convs[0].conv.weight, rtol=1e-4, atol=1e-6)
