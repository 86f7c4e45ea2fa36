"""The small and mobile backbones: Darknet's own outputs, the SE variant, the fusion / partial-ratio
ablation, depthwise convs on the GPU delegate, tf_keras, errors."""

import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_csp
from keras_csp import zoo
from keras_csp.backend import keras

# Counts (Table 3 / Darknet's), conv-by-conv cfg equality, pyramids and .keras round trips of every
# registered backbone: tests/test_registry_models.py.
CSMOBILENET_CFG = "reference-repo/csmobilenet-v2.cfg"


@functools.lru_cache(maxsize=None)
def full_size(name, size=224):
    """The model at its Table 3 input size with the 1000-way top (built once per session)."""
    return zoo.build(name, input_shape=(size, size, 3))


def test_swish_and_se_variants_match_table3():
    """Table 3: SE adds 0.02M weights and no measurable BFLOPs; swish changes no count."""
    plain = keras_csp.profile(full_size("CSPPeleeNet"))
    model = zoo.build("csppeleenet-swish-se", input_shape=(224, 224, 3))
    se = keras_csp.profile(model)
    assert abs(se.params - 2.85e6) / 2.85e6 < 0.05
    assert 15_000 < se.params - plain.params < 30_000
    assert abs(se.bflops - plain.bflops) < 0.001
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Multiply" in kinds and "LeakyReLU" not in kinds


def test_csmobilenet_v2_reproduces_darknet(shared_dir, tmp_path):
    """Darknet's own outputs (vectors/csmobilenet-v2.npz) with its seed-0 random weights."""
    weights = tmp_path / "csmobilenet-v2.weights"
    subprocess.run(
        [sys.executable, str(shared_dir / "darknet" / "make_weights.py"),
         str(shared_dir / "darknet" / "cfg" / CSMOBILENET_CFG), str(weights), "--seed", "0"],
        check=True, capture_output=True,
    )
    vectors = np.load(shared_dir / "darknet" / "vectors" / "csmobilenet-v2.npz")
    model = keras_csp.CSPMobileNetV2(input_shape=(224, 224, 3), classifier_activation=None, weights=str(weights))
    outputs = keras.Model(model.input, [model.get_layer("P1").output, model.get_layer("P2").output, model.output])
    p1, p2, logits = (t.numpy()[0] for t in outputs(vectors["input"][None]))
    for ours, key in ((p1, "layer_006"), (p2, "layer_016"), (logits, "layer_079")):
        reference = vectors[key].reshape(ours.shape)
        np.testing.assert_allclose(ours, reference, atol=1e-3 * np.abs(reference).max())


def _bflops(builder, size=224, **kwargs):
    return keras_csp.profile(builder(input_shape=(size, size, 3), **kwargs)).bflops


def test_table1_fusion_and_partial_ratio_trends():
    """Table 1: fusion first < fusion last < CSPPeleeNet ("both"); more channels through the
    dense layers cost more (the paper's gamma is the share that skips them)."""
    both = keras_csp.profile(full_size("CSPPeleeNet")).bflops
    first, last = _bflops(keras_csp.CSPPeleeNet, fusion="first"), _bflops(keras_csp.CSPPeleeNet, fusion="last")
    assert first < last < both
    # gamma = 0.25 (partial_ratio 0.75): costlier, and the paper's 0.986 within 5%.
    quarter = _bflops(keras_csp.CSPPeleeNet, partial_ratio=0.75)
    assert both < quarter and abs(quarter - 0.986) / 0.986 < 0.05


def test_table1_benchmark_script(tmp_path):
    import importlib.util
    import json

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "table1_ablation.py")
    spec = importlib.util.spec_from_file_location("table1_ablation", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.main(["--only", "PeleeNet", "SPeleeNet", "--json", str(tmp_path / "t1.json")])
    assert [r["model"] for r in rows] == ["PeleeNet", "SPeleeNet"]
    assert abs(rows[0]["diff"]) < 0.01 and rows[1]["bflops"] is None
    assert json.loads((tmp_path / "t1.json").read_text())[0]["params"] == rows[0]["params"]
    assert len(script.TABLE1) == 12 and "not built" in script.markdown(rows, 224)


def test_fusion_modes_change_the_layers():
    def layer_names(fusion):
        model = keras_csp.CSPDenseNetbRef(include_top=False, input_shape=(64, 64, 3), fusion=fusion)
        return {layer.name for layer in model.layers}

    both, first, last = layer_names("both"), layer_names("first"), layer_names("last")
    assert "stage2_transition_conv" in both and "stage2_fusion_conv" in both
    assert "stage2_transition_conv" not in first and "stage2_fusion_conv" in first
    assert "stage2_transition_conv" in last and "stage2_fusion_conv" not in last


def test_partial_split_is_a_channel_slice():
    model = keras_csp.CSPPeleeNet(include_top=False, input_shape=(64, 64, 3), partial_ratio=0.25)
    cross, main = model.get_layer("stage2_cross"), model.get_layer("stage2_main")
    assert (cross.start, cross.stop, main.start, main.stop) == (0, 96, 96, 128)
    x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
    layer = keras_csp.models.blocks.ChannelRange(2, 5)
    np.testing.assert_array_equal(layer(x).numpy(), x[..., 2:5])
    again = keras_csp.models.blocks.ChannelRange.from_config(layer.get_config())
    assert (again.start, again.stop) == (2, 5)


def test_channel_slice_is_a_deprecated_channel_range_that_still_loads(tmp_path):
    x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
    with pytest.warns(DeprecationWarning, match="use ChannelRange"):
        old = keras_csp.layers.ChannelSlice(2, 1, name="old")
    assert isinstance(old, keras_csp.layers.ChannelRange)
    np.testing.assert_array_equal(old(x).numpy(), x[..., 4:8])
    inputs = keras.Input((3, 3, 8))
    keras.Model(inputs, old(inputs)).save(tmp_path / "old.keras")  # registered under its old name
    with pytest.warns(DeprecationWarning):
        again = keras.saving.load_model(tmp_path / "old.keras")
    assert (again.get_layer("old").groups, again.get_layer("old").group_id) == (2, 1)
    np.testing.assert_array_equal(again(x).numpy(), x[..., 4:8])
    # ChannelRange lived in keras_csp.models.blocks: a file naming that module still resolves.
    moved = keras.saving.deserialize_keras_object({
        "module": "keras_csp.models.blocks", "class_name": "ChannelRange", "registered_name": "keras_csp>ChannelRange",
        "config": {"name": "r", "trainable": True, "dtype": "float32", "start": 2, "stop": 5}})
    assert type(moved) is keras_csp.layers.ChannelRange and (moved.start, moved.stop) == (2, 5)


def test_conv_spec_is_the_deprecated_name_of_stage_conv():
    import keras_csp.models.stages as stages

    for module in (keras_csp.models, stages):
        with pytest.warns(DeprecationWarning, match="use StageConv"):
            assert module.ConvSpec is stages.StageConv


def test_mobile_nets_use_depthwise_convs():
    model = full_size("CSPMobileNetV2")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("DepthwiseConv2D") == 21
    assert model.get_layer("stage1_cross_conv").groups == 16  # 3x3 over channel pairs: a grouped conv
    assert type(model.get_layer("stage2_main1_conv")).__name__ == "DepthwiseConv2D"
    # Darknet's depthwise x2 as repeated channels + multiplier 1 (the GPU delegate's form).
    assert model.get_layer("stage2_main1_repeat").repeats == 2
    assert model.get_layer("stage2_main1_conv").depth_multiplier == 1
    assert model.get_layer("stage2_main1_conv").output.shape[-1] == 2 * 48


def test_repeated_channels_compute_a_depthwise_multiplier():
    """RepeatChannels(m) + DepthwiseConv2D(multiplier 1) equals DepthwiseConv2D(multiplier m)
    with the same kernel values (Keras' [k, k, C, m] order flattened to [k, k, C*m, 1])."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 7, 5)).astype(np.float32)
    reference = keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=3, use_bias=False)
    want = reference(x).numpy()
    repeat = keras_csp.layers.RepeatChannels(3)
    ours = keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=1, use_bias=False)
    ours.build((None, 9, 7, 15))
    ours.set_weights([reference.get_weights()[0].reshape(3, 3, 15, 1)])
    np.testing.assert_allclose(ours(repeat(x)).numpy(), want, rtol=1e-5, atol=1e-5)
    again = keras_csp.layers.RepeatChannels.from_config(repeat.get_config())
    assert again.repeats == 3 and again.compute_output_shape((None, 9, 7, 5)) == (None, 9, 7, 15)
    with pytest.raises(ValueError, match="repeats"):
        keras_csp.layers.RepeatChannels(0)


@pytest.mark.parametrize("builder", ["zoo", "darknet_cfg"])
def test_csp_mobilenet_v2_runs_whole_on_the_gpu_delegate(tmp_path, shared_dir, builder):
    """Every op of the exported CSPMobileNet-v2 passes the GPU-delegate check, and LiteRT
    gives the Keras outputs: built by the zoo, and straight from Darknet's cfg (both build
    its groups == channels convs with conv_bn_act, multiplier 2 as repeated channels)."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_csp import darknet
    from keras_csp.export import to_tflite

    if builder == "zoo":
        model = keras_csp.CSPMobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None)
    else:
        model = darknet.load(shared_dir / "darknet" / "cfg" / CSMOBILENET_CFG, input_size=(64, 64))
        assert any(type(layer).__name__ == "RepeatChannels" for layer in model.layers)
    assert any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers)
    result = to_tflite(model, tmp_path / "csmobilenet.tflite")
    assert result.gpu_report.ok, str(result.gpu_report)
    runner = Interpreter(model_path=result.path).get_signature_runner("serving_default")
    image = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    want = model(image, training=False).numpy()
    got = runner(images=image)["output"]
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max(), rtol=1e-3)


def test_fit_one_step_and_every_weight_gets_a_gradient():
    import tensorflow as tf

    model = every_block_kind(classes=3, activation="swish")
    x = np.random.default_rng(3).random((2, 64, 64, 3), dtype=np.float32)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(np.array([0, 2]), model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def every_block_kind(**kwargs):
    """A tiny backbone with every stem, pool, split and block kind of the small backbones."""
    from keras_csp.models.application import BackboneSpec, build_application
    from keras_csp.models.blocks import PeleeStem
    from keras_csp.models.stages import StageConv, StageSpec

    run = dict(num_blocks=1, block="inverted", hidden=32, out=32, depth_multiplier=2)
    spec = BackboneSpec(
        "EveryBlockKind",
        stem=(PeleeStem(16),),
        stages=(
            StageSpec(("avgpool",), 1, "two_way_dense", hidden=8, growth=8, se=4, csp=True, split=(8, 8),
                      split_mode="slice", transition=16, fusion_filters=16),
            StageSpec((StageConv(32, 3, 2),), 1, "darknet", hidden=8, out=16, elastic=True, csp=True,
                      split=(16, 16), transition=16, fusion_filters=32),
            StageSpec(("maxpool",), then=(StageSpec(**run), StageSpec(num_blocks=1, block="basic", hidden=32, out=32),
                                          StageSpec(num_blocks=1, block="dense", hidden=16, growth=8)),
                      num_blocks=0, transition=32),
        ),
        levels=(3, 4, 5),
    )
    return build_application(spec, input_shape=(64, 64, 3), **kwargs)


def test_keras_save_load_round_trip(tmp_path):
    model = every_block_kind(include_top=False)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"DepthwiseConv2D", "ChannelRange"} & kinds
    x = np.random.default_rng(4).random((1, 64, 64, 3), dtype=np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert set(keras_csp.pyramid_outputs(loaded)) == set(keras_csp.pyramid_outputs(model))


def test_every_block_kind_is_exercised():
    model = every_block_kind(include_top=False)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"ChannelRange", "Multiply", "NearestUpsample2D", "DepthwiseConv2D", "AveragePooling2D", "Add"} <= kinds


def test_legacy_keras_builds_the_same_networks(tmp_path):
    """Build under tf_keras in a subprocess, load Keras 3's weights, compare outputs."""
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    models = [every_block_kind(classes=5), keras_csp.CSPMobileNetV2(classes=5, input_shape=(64, 64, 3))]
    for i, model in enumerate(models):
        np.savez(tmp_path / f"w{i}.npz", *model.get_weights())
        np.save(tmp_path / f"y{i}.npy", model(x, training=False).numpy())
    here = os.path.dirname(os.path.abspath(__file__))
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        sys.path.insert(0, r"{here}")
        import keras_csp
        from keras_csp.backend import keras, LEGACY_KERAS
        import tf_keras
        from test_small_backbones import every_block_kind
        assert LEGACY_KERAS and keras is tf_keras, "not running on tf_keras"
        x = np.load(r"{tmp_path}/x.npy")
        models = [every_block_kind(classes=5), keras_csp.CSPMobileNetV2(classes=5, input_shape=(64, 64, 3))]
        for i, model in enumerate(models):
            assert isinstance(model, tf_keras.Model)
            w = np.load(r"{tmp_path}/w%d.npz" % i)
            model.set_weights([w["arr_%d" % j] for j in range(len(w.files))])
            y = model(x, training=False).numpy()
            np.testing.assert_allclose(y, np.load(r"{tmp_path}/y%d.npy" % i), rtol=1e-4, atol=1e-6)
            print(model.name, "ok")
        """
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == len(models)


def test_every_small_backbone_is_in_the_zoo_and_documented():
    """Stable names (the small detectors build on them), each saying what it is."""
    from test_registry_models import small_by_default

    for name in keras_csp.models.SMALL_BACKBONES:
        builder = zoo.BACKBONES[name]
        assert builder.__name__ == name and getattr(keras_csp, name) is builder
        assert "cfg-exact" in builder.__doc__ or "Reconstruction" in builder.__doc__
    for name in ("CSPPeleeNet", "PeleeNet", "CSPPeleeNetRef", "CSPDenseNetRef", "CSPDenseNetbRef", "CSPPeleeNetbRef"):
        assert name in keras_csp.models.SMALL_BACKBONES and small_by_default(name)  # forward pass by default
    for variant, (builder, _) in zoo.VARIANTS.items():
        assert builder in zoo.BACKBONES, variant


class TestBadArguments:
    def test_fusion(self):
        with pytest.raises(ValueError, match="received fusion='middle'"):
            keras_csp.CSPPeleeNet(fusion="middle")

    def test_partial_ratio_range(self):
        with pytest.raises(ValueError, match="received partial_ratio=1.5"):
            keras_csp.CSPDenseNetRef(partial_ratio=1.5)

    def test_partial_ratio_too_extreme_for_a_split(self):
        with pytest.raises(ValueError, match="CSPPeleeNet stage 1: partial_ratio=0.01"):
            keras_csp.CSPPeleeNet(partial_ratio=0.01)

    def test_partial_ratio_of_a_fixed_cfg(self):
        with pytest.raises(ValueError, match="partial_ratio must be 0.5, received partial_ratio=0.25"):
            keras_csp.CSPMobileNetV2(partial_ratio=0.25)

    def test_unknown_option(self):
        with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['se'\]"):
            keras_csp.CSPDenseNetRef(se=True)

    def test_input_smaller_than_stride(self):
        with pytest.raises(ValueError, match="at least 64"):
            keras_csp.DarknetRef(input_shape=(32, 64, 3))

    def test_elastic_needs_even_feature_maps(self):
        with pytest.raises(ValueError, match="need even feature sizes, got \\(3, 3\\)"):
            keras_csp.CSPDarknet53Elastic(include_top=False, input_shape=(96, 96, 3))

    def test_no_imagenet_weights(self):
        with pytest.raises(ValueError, match="No ImageNet weights were published for CSPDenseNetbRef"):
            keras_csp.CSPDenseNetbRef(weights="imagenet", input_shape=(64, 64, 3))

    def test_bad_slice_split(self):
        from keras_csp.models.stages import StageSpec, build_stage

        spec = StageSpec(csp=True, split=(8, 4), split_mode="slice", block="dense", growth=4, num_blocks=1)
        with pytest.raises(ValueError, match=r"cross \+ main == input channels; got split=\(8, 4\) for 16"):
            build_stage(keras.Input((8, 8, 16)), spec, "leaky", "s", [])


def test_backbone_benchmark_measures_tflite_fp32_and_int8():
    """benchmarks/backbones.py --tflite: both exports of a small model are timed (smoke: the
    numbers exist and are positive; timings are never asserted)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "backbones.py")
    spec = importlib.util.spec_from_file_location("backbones_benchmark", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = keras_csp.CSPDenseNetbRef(include_top=False, input_shape=(64, 64, 3))
    fp32, int8 = script.tflite_latency({"CSPDenseNetbRef": model}, 64, repeats=2, threads=1)["CSPDenseNetbRef"]
    assert 0 < fp32 < 10 and 0 < int8 < 10
