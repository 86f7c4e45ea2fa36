"""The same model code under Keras 3 and under tf_keras (TF_USE_LEGACY_KERAS=1, for tfmot)."""

import os
import subprocess
import sys
import textwrap

import numpy as np

import keras_csp

NAMES = [("CSPResNeXt50", {}), ("CSPDarknet53", {"activation": "mish"}), ("ResNet50", {})]


def test_legacy_keras_builds_the_same_networks(tmp_path):
    """Build under tf_keras in a subprocess, load Keras 3's weights, compare outputs."""
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    for i, (name, kwargs) in enumerate(NAMES):
        model = keras_csp.zoo.build(name, include_top=True, classes=5, input_shape=(64, 64, 3), **kwargs)
        np.savez(tmp_path / f"w{i}.npz", *model.get_weights())
        np.save(tmp_path / f"y{i}.npy", model(x, training=False).numpy())
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        import keras_csp
        from keras_csp.backend import keras, LEGACY_KERAS
        import tf_keras
        assert LEGACY_KERAS and keras is tf_keras, "not running on tf_keras"
        x = np.load(r"{tmp_path}/x.npy")
        for i, (name, kwargs) in enumerate({NAMES!r}):
            model = keras_csp.zoo.build(name, include_top=True, classes=5, input_shape=(64, 64, 3), **kwargs)
            assert isinstance(model, tf_keras.Model)
            w = np.load(r"{tmp_path}/w%d.npz" % i)
            model.set_weights([w["arr_%d" % j] for j in range(len(w.files))])
            y = model(x, training=False).numpy()
            np.testing.assert_allclose(y, np.load(r"{tmp_path}/y%d.npy" % i), rtol=1e-4, atol=1e-6)
            print(name, "ok")
        """
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == len(NAMES)
