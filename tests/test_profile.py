"""keras_csp.profile: kernel weights, FLOPs and the paper's CIO formula."""

import pytest

import keras_csp
from keras_csp.backend import keras


def dense_block(c, d, m, w=8, h=8, partial=False):
    """A DenseNet block of m 3x3 layers with growth d on a c-channel base (Section 3.1).

    With ``partial`` only half of the base channels enter the block, as in CSPDenseNet.
    """
    inputs = keras.Input((h, w, c))
    x = inputs
    if partial:
        x = keras.layers.Lambda(lambda t: t[..., : c // 2], output_shape=(h, w, c // 2))(x)
    for i in range(m):
        y = keras.layers.Conv2D(d, 3, padding="same", use_bias=False, name=f"dense{i}")(x)
        x = keras.layers.Concatenate()([x, y])
    return keras.Model(inputs, x)


@pytest.mark.parametrize("c,d,m", [(64, 16, 4), (128, 32, 6)])
def test_cio_of_dense_block_matches_paper_formula(c, d, m):
    w = h = 8
    prof = keras_csp.profile(dense_block(c, d, m, w, h))
    # Paper, Section 3.1: CIO of a dense block is (c*m) + ((m^2 + m) * d) / 2 (per pixel).
    assert prof.cio == (c * m + (m * m + m) * d // 2) * w * h
    partial = keras_csp.profile(dense_block(c, d, m, w, h, partial=True))
    # Partial dense block: ((c*m) + (m^2 + m) * d) / 2 (per pixel).
    assert partial.cio == ((c * m + (m * m + m) * d) // 2) * w * h


def test_flops_params_and_bottleneck():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="small")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="big")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    prof = keras_csp.profile(keras.Model(inputs, x))
    assert [layer.params for layer in prof.layers] == [3 * 3 * 3 * 8, 3 * 3 * 8 * 32, 3 * 3 * 32]
    assert prof.layers[1].flops == 2 * 3 * 3 * 8 * 32 * 8 * 8
    assert prof.layers[1].cio == 16 * 16 * 8 + 8 * 8 * 32
    assert prof.bottleneck.name == "big"
    assert "bottleneck big" in prof.table()


def test_plot_writes_png(tmp_path):
    a = keras_csp.profile(keras_csp.CSPResNeXt50(input_shape=(64, 64, 3)))
    b = keras_csp.profile(keras_csp.ResNeXt50(input_shape=(64, 64, 3)))
    path = a.plot(tmp_path / "fig.png", [b])
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dynamic_shape_is_an_error():
    with pytest.raises(ValueError, match="static shapes"):
        keras_csp.profile(keras_csp.CSPDarknet53(include_top=False))


def test_cli_profile(capsys):
    from keras_csp.cli import main

    main(["profile", "CSPResNet50", "--summary"])
    out = capsys.readouterr().out
    assert "21,566,656" in out and "8.967" in out


def test_cli_profile_detector_by_name(capsys):
    from keras_csp.cli import main

    main(["profile", "CSPDarknet53-PANet-SPP", "--size", "416", "--summary"])
    out = capsys.readouterr().out
    assert "64,296,032" in out  # Darknet's count for csdarknet53-panet-spp.cfg
