"""The paper's analysis tools for any Keras model: per-layer FLOPs, parameters and CIO.

Counting follows the paper and Darknet: "#Parameter" is the sum of conv / dense kernel
sizes only (no biases, no batch norm) and BFLOPs is 2 x multiply-adds / 1e9. CIO
(Convolutional Input/Output, Chao et al. 2019, used in Section 3.1 and Figure 8) is, per
conv layer, the number of elements of its input plus its output feature map.
"""

import dataclasses

from keras_csp.backend import keras


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """Counts of one conv or dense layer."""

    name: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    params: int
    flops: int
    cio: int

    @property
    def bflops(self):
        return self.flops / 1e9


@dataclasses.dataclass
class Profile:
    """Per-layer counts and totals of one model; ``str()`` is the Darknet-like table."""

    model_name: str
    layers: list

    @property
    def params(self):
        return sum(layer.params for layer in self.layers)

    @property
    def flops(self):
        return sum(layer.flops for layer in self.layers)

    @property
    def bflops(self):
        return self.flops / 1e9

    @property
    def cio(self):
        return sum(layer.cio for layer in self.layers)

    @property
    def bottleneck(self):
        """The layer with the most FLOPs: the paper's computational bottleneck (Figure 7)."""
        return max(self.layers, key=lambda layer: layer.flops)

    def table(self):
        lines = [f"{'#':>4} {'layer':<34} {'input':>18} {'output':>18} {'params':>11} {'BFLOPs':>8} {'CIO':>11}"]
        for i, layer in enumerate(self.layers):
            lines.append(
                f"{i:>4} {layer.name[:34]:<34} {'x'.join(map(str, layer.input_shape)):>18} "
                f"{'x'.join(map(str, layer.output_shape)):>18} {layer.params:>11,} "
                f"{layer.bflops:>8.3f} {layer.cio:>11,}"
            )
        b = self.bottleneck
        lines.append(
            f"{self.model_name}: {self.params:,} kernel weights, {self.bflops:.3f} BFLOPs, "
            f"CIO {self.cio / 1e6:.1f}M, bottleneck {b.name} ({b.bflops:.3f} BFLOPs)"
        )
        return "\n".join(lines)

    __str__ = table

    def plot(self, path, others=()):
        """Write a PNG of per-layer BFLOPs and CIO bars (the paper's Figures 7 and 8),
        with ``others`` (more Profiles) side by side."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        profiles = [self, *others]
        fig, axes = plt.subplots(2, len(profiles), figsize=(6 * len(profiles), 6), squeeze=False)
        for col, prof in enumerate(profiles):
            xs = range(len(prof.layers))
            axes[0][col].bar(xs, [layer.bflops for layer in prof.layers], color="tab:blue")
            axes[0][col].set_title(f"{prof.model_name}: {prof.bflops:.2f} BFLOPs")
            axes[0][col].set_ylabel("BFLOPs per layer")
            axes[1][col].bar(xs, [layer.cio / 1e6 for layer in prof.layers], color="tab:orange")
            axes[1][col].set_title(f"CIO {prof.cio / 1e6:.1f}M")
            axes[1][col].set_ylabel("CIO (M elements)")
            axes[1][col].set_xlabel("conv layer")
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path


def _shape(tensor):
    return tuple(int(d) if d is not None else -1 for d in tensor.shape[1:])


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def profile(model):
    """Count kernel weights, FLOPs and CIO of every Conv2D / DepthwiseConv2D / Dense layer.

    The model needs a static input size (build it with ``input_shape=(H, W, 3)``).
    """
    rows = []
    for layer in _walk(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            in_shape, out_shape = _shape(layer.input), _shape(layer.output)
            if -1 in in_shape or -1 in out_shape:
                raise ValueError(
                    f"profile needs static shapes; layer {layer.name} has input {in_shape}. "
                    "Build the model with a fixed input_shape."
                )
            # tf_keras names the depthwise kernel `depthwise_kernel`, Keras 3 `kernel`.
            weights = getattr(layer, "depthwise_kernel", None)
            kernel = _numel((layer.kernel if weights is None else weights).shape)
            positions = _numel(out_shape[:-1]) if not isinstance(layer, keras.layers.Dense) else 1
            rows.append(
                LayerProfile(
                    name=layer.name,
                    kind=type(layer).__name__,
                    input_shape=in_shape,
                    output_shape=out_shape,
                    params=kernel,
                    flops=2 * kernel * positions,
                    cio=_numel(in_shape) + _numel(out_shape),
                )
            )
    return Profile(model.name, rows)


def _walk(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer
