"""DenseNet-201 (the authors' in_progress/darknet/icfg/densenet201-*.cfg), its Elastic form
(Wang et al. 2019, as in allenai/elastic) and their CSP versions (Table 3), as data.

cfg-exact: DenseNet201. Reconstructions: DenseNet201Elastic, CSPDenseNet201Elastic (Table
3's 19.48M / 8.77 and 20.17M / 7.13) and CSPDenseNet201 (no target in the paper).
"""

from keras_csp.models.application import BackboneSpec
from keras_csp.models.builders import make_builder, split_width
from keras_csp.models.stages import StageConv, StageSpec, fuses_first, partial_widths

GROWTH = 32
STEM = (StageConv(64, 7, 2), "maxpool")

# densenet201-*.cfg: 6 / 12 / 48 / 32 layers (1x1 128 -> 3x3 32), transitions 1x1 128 / 256
# / 512, each followed by a 2x2/2 max-pool; no transition after the last block.
CFG_LAYERS = (6, 12, 48, 32)
CFG_TRANSITIONS = (128, 256, 512)

# allenai/elastic's densenet201_elastic: 10 / 20 / 40 / 30 layers, DenseNet-BC transitions
# (compression 0.5, 2x2 average pool).
ELASTIC_LAYERS = (10, 20, 40, 30)


def _densenet201():
    stages = []
    for i, n in enumerate(CFG_LAYERS):
        stages.append(StageSpec(
            () if i == 0 else ("maxpool",), n, "dense", hidden=4 * GROWTH, growth=GROWTH,
            transition=CFG_TRANSITIONS[i] if i < len(CFG_TRANSITIONS) else 0,
        ))
    return BackboneSpec("DenseNet201", stem=STEM, stages=tuple(stages), levels=(2, 3, 4, 5), top="conv_pool")


def _elastic_run(n, last):
    """Elastic dense layers: two 1x1 64 -> 3x3 32 branches on the whole input, the second at
    half resolution, summed. In the last block ELASTIC does not downsample (7x7 at 224), so
    the two branches are exactly one DenseNet-BC layer of 1x1 width 128: built as such."""
    if last:
        return dict(num_blocks=n, block="dense", hidden=4 * GROWTH, growth=GROWTH)
    return dict(num_blocks=n, block="dense", hidden=2 * GROWTH, growth=GROWTH, elastic=True)


def _densenet201_elastic():
    stages, channels = [], 64
    for i, n in enumerate(ELASTIC_LAYERS):
        last = i == len(ELASTIC_LAYERS) - 1
        out = channels + n * GROWTH
        down = () if i == 0 else ("avgpool",)
        stages.append(StageSpec(down, transition=0 if last else out // 2, **_elastic_run(n, last)))
        channels = out if last else out // 2
    return BackboneSpec("DenseNet201Elastic", stem=STEM, stages=tuple(stages), levels=(2, 3, 4, 5), default_size=224)


def _csp_densenet(name, layers, transitions, elastic, pool, fusion, partial_ratio, default_size, top="pool_conv"):
    """Partial dense stages as CSPPeleeNet's: channel split, dense layers, partial transition
    (same width), concatenation; the fusion transition runs after the next stage's 2x2 pool
    and sets its width (``transitions``: the DenseNet's own widths, or None for half the
    concatenation, DenseNet-BC's compression 0.5); the last stage ends with a fusion conv."""
    stages, channels = [], 64
    fused = fuses_first(fusion)
    for i, n in enumerate(layers):
        last = i == len(layers) - 1
        down = () if i == 0 else (pool,)
        if i and fused:
            channels = transitions[i - 1] if transitions else channels // 2
            down += (StageConv(channels, 1),)
        main = split_width(channels, partial_ratio, f"{name} stage {i + 1}")
        run = _elastic_run(n, last) if elastic else dict(num_blocks=n, block="dense", hidden=4 * GROWTH, growth=GROWTH)
        stages.append(StageSpec(
            down, csp=True, split=(channels - main, main), split_mode="slice",
            **partial_widths(fusion, main + n * GROWTH, channels + n * GROWTH if last else 0), **run,
        ))
        channels += n * GROWTH
    return BackboneSpec(name, stem=STEM, stages=tuple(stages), levels=(2, 3, 4, 5), default_size=default_size, top=top)


DenseNet201 = make_builder("DenseNet201", _densenet201, """\
Instantiate DenseNet-201 as the authors' in_progress/darknet/icfg/densenet201-leaky.cfg, 256x256.

    cfg-exact: 7x7/2 conv, 2x2/2 max-pool, dense blocks of 6 / 12 / 48 / 32 layers (1x1 128
    -> 3x3 32, output [new, x]), 1x1 transitions to 128 / 256 / 512 each followed by a 2x2/2
    max-pool; the top applies the 1x1 classifier conv before the average pool, as the cfg.
    17,138,880 kernel weights / 10.85 BFLOPs (Darknet: 17,138,880 / 10.850). The
    densenet201-mish / -relu / -swish cfgs are activation="mish" / "relu" / "swish".
""", mode="none")

DenseNet201Elastic = make_builder("DenseNet201Elastic", _densenet201_elastic, """\
Instantiate DenseNet-201-Elastic (Wang et al. 2019; Table 3's baseline), 224x224.

    Reconstruction of allenai/elastic's ``densenet201_elastic`` in Darknet terms: 7x7/2
    conv, 2x2/2 max-pool, dense blocks of 10 / 20 / 40 / 30 layers whose layers run two
    1x1 64 -> 3x3 32 branches on the whole input, the second after a 2x2/2 max-pool and
    followed by a x2 nearest upsample (ELASTIC: average pool, bilinear; Darknet's -elastic
    cfgs: max-pool, nearest), summed; no downsampling in the last block (there the layer is
    a plain 1x1 128 -> 3x3 32 one, the same function and count). DenseNet-BC transitions
    (1x1 to half the width, 2x2 average pool). 19.26M / 8.53 BFLOPs (paper: 19.48M / 8.77).
""", mode="none")

CSPDenseNet201Elastic = make_builder(
    "CSPDenseNet201Elastic",
    lambda fusion, partial_ratio: _csp_densenet("CSPDenseNet201Elastic", ELASTIC_LAYERS, None, True, "avgpool",
                                                fusion, partial_ratio, 224),
    """\
Instantiate CSPDenseNet-201-Elastic (Table 3), 224x224.

    Reconstruction (no cfg published): DenseNet201Elastic's stages as partial dense stages
    (channel split in halves, the elastic dense layers on one part, concatenation; the
    DenseNet-BC transition, 1x1 to half the width, runs after the 2x2 average pool and
    fuses both parts). Default fusion="first": with a partial transition ("both") the
    network has 12% more BFLOPs than the paper's, the layout without it is within 4%:
    19.55M / 6.85 BFLOPs (paper: 20.17M / 7.13).
""",
    mode="baked",
    default_fusion="first",
)

CSPDenseNet201 = make_builder(
    "CSPDenseNet201",
    lambda fusion, partial_ratio: _csp_densenet("CSPDenseNet201", CFG_LAYERS, CFG_TRANSITIONS, False, "maxpool",
                                                fusion, partial_ratio, 256, top="conv_pool"),
    """\
Instantiate CSPDenseNet-201 on the layout of densenet201-leaky.cfg, 256x256 (no target in the paper).

    Reconstruction, laid out as CSPDenseNet201Elastic: the cfg's dense blocks as partial
    dense stages (channel split in halves, dense layers on one part, concatenation; the
    cfg's 1x1 transition to 128 / 256 / 512 runs after the 2x2 max-pool and fuses both
    parts; a 1x1 fusion ends the last stage); top as the cfg (classifier conv, then pool).
    Default fusion="first": 17.54M / 9.46 BFLOPs against DenseNet201's 17.14M / 10.85
    ("both", with a partial transition: 22.2M / 11.9).
""",
    mode="baked",
    default_fusion="first",
)
