"""The reference repo's -elastic cfgs as data: CSPDarknet53, CSPResNet50 and CSPResNeXt50
with Elastic blocks (csdarknet53-elastic.cfg, csresnet50-elastic.cfg, csresnext50-elastic.cfg).

Each is its big CSP sibling (keras_csp.models.families) with three changes read off the cfgs:
every residual block is Elastic (its input's two channel halves go through half-width
branches, the second at half resolution), the per-branch ``hidden`` width is half the block
output, and the ResNe(X)t stage 1 main path is as wide as its block output (128, not 64);
ResNeXt's grouped convs use 16 groups instead of 32. Counts equal Darknet's exactly.
"""

import dataclasses

import keras_csp.models.families as families  # noqa: PLR0402  (the module, not the package: no cycle)
from keras_csp.models.builders import make_builder


def _elastic(base_name):
    spec = families.SPECS[base_name]
    stages = []
    for i, stage in enumerate(spec.stages):
        cross, main = stage.split
        stages.append(dataclasses.replace(
            stage, elastic=True, hidden=stage.out // 2, groups=16 if stage.groups > 1 else 1,
            split=(cross, stage.out) if i == 0 else (cross, main),
        ))
    return dataclasses.replace(spec, name=f"{base_name}Elastic", stages=tuple(stages))


_DOC = """\
Instantiate {name} as the authors' {cfg}, 256x256.

    cfg-exact ({count} kernel weights, {bflops} BFLOPs as Darknet); see
    :mod:`keras_csp.models.elastic` for how it differs from {base}. Input sides must be
    multiples of 64: each Elastic block halves its stride-32 features once more.
"""

CSPDarknet53Elastic = make_builder("CSPDarknet53Elastic", lambda: _elastic("CSPDarknet53"), _DOC.format(
    name="CSPDarkNet-53-Elastic", cfg="csdarknet53-elastic.cfg", count="19,045,216", bflops="7.745",
    base="CSPDarknet53"), mode="generic")
CSPResNet50Elastic = make_builder("CSPResNet50Elastic", lambda: _elastic("CSPResNet50"), _DOC.format(
    name="CSPResNet-50-Elastic", cfg="csresnet50-elastic.cfg", count="29,795,520", bflops="9.367",
    base="CSPResNet50"), mode="generic")
CSPResNeXt50Elastic = make_builder("CSPResNeXt50Elastic", lambda: _elastic("CSPResNeXt50"), _DOC.format(
    name="CSPResNeXt-50-Elastic", cfg="csresnext50-elastic.cfg", count="16,857,792", bflops="5.452",
    base="CSPResNeXt50"), mode="generic")
