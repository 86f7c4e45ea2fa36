"""Per-layer shapes, parameters and BFLOPs of a Darknet network, printed as Darknet does.

Counting follows Darknet: a conv costs ``2 * (c / groups) * n * k * k * out_h * out_w``
FLOPs, a pool ``k * k * c * out_h * out_w``, a shortcut one add per output value per
source; the paper's "#Parameter" is the sum of conv kernel sizes (the "W" column).
"""

import keras_csp.darknet.spec as S
from keras_csp.darknet.spec import infer_network


def _whc(shape):
    h, w, c = shape
    return f"{w:4d} x{h:4d} x{c:4d}"


def _describe(spec):
    """(Darknet's short layer name, filters column, size/stride column)."""
    if isinstance(spec, S.ConvSpec):
        stride = (f"{spec.stride_x}" if spec.stride_x == spec.stride_y
                  else f"{spec.stride_x}x{spec.stride_y}")
        groups = f"{spec.filters}/{spec.groups:<3d}" if spec.groups > 1 else f"{spec.filters}"
        shared = " shared" if spec.share_index is not None else ""
        return "conv" + shared, groups, f"{spec.size} x{spec.size}/{stride:>2s}"
    if isinstance(spec, S.PoolSpec):
        if spec.maxpool_depth:
            return "max-depth", f"{spec.out_channels}", ""
        stride = (f"{spec.stride_x}" if spec.stride_x == spec.stride_y
                  else f"{spec.stride_x}x{spec.stride_y}")
        return spec.mode, "", f"{spec.size}x{spec.size}/{stride:>2s}"
    if isinstance(spec, S.RouteSpec):
        group = f" {spec.group_id}/{spec.groups}" if spec.groups > 1 else ""
        return "route", " ".join(str(i) for i in spec.inputs) + group, ""
    if isinstance(spec, S.ShortcutSpec):
        return "shortcut", " ".join(str(i) for i in spec.inputs[1:]), ""
    if isinstance(spec, S.UpsampleSpec):
        return "upsample", "", f"{spec.stride}x"
    if isinstance(spec, S.ConnectedSpec):
        return "connected", f"{spec.output}", ""
    if isinstance(spec, (S.ScaleChannelsSpec, S.SamSpec)):
        return spec.type, f"{spec.inputs[1]}", ""
    if isinstance(spec, S.ReorgSpec):
        return "reorg", "", f"/{spec.stride}"
    if isinstance(spec, S.GlobalAvgPoolSpec):
        return "avg", "", ""
    return spec.type, "", ""


def summarize(cfg, input_size=None):
    """One dict per layer: index, type, filters, size, input, output, weights, bflops."""
    network = cfg if isinstance(cfg, S.Network) else infer_network(cfg, input_size)
    rows = []
    for spec in network.layers:
        kind, filters, size = _describe(spec)
        rows.append(
            dict(
                index=spec.index,
                type=kind,
                filters=filters,
                size=size,
                input=tuple(spec.input_shape),
                output=tuple(spec.output_shape),
                weights=spec.kernel_weights,
                floats=spec.weight_floats,
                bflops=spec.bflops,
                line=spec.line,
            )
        )
    return rows


def format_summary(cfg, input_size=None):
    """Darknet's layer table, then totals of layers, parameters and BFLOPs."""
    network = cfg if isinstance(cfg, S.Network) else infer_network(cfg, input_size)
    lines = [
        f"{network.path}: {network.width} x {network.height} x {network.channels}",
        "   layer   filters  size/strd      input                output",
    ]
    for row in summarize(network):
        bf = f"{row['bflops']:6.3f} BF" if row["bflops"] else ""
        lines.append(
            f"{row['index']:4d} {row['type']:<9s} {row['filters']:<9s} {row['size']:<9s} "
            f"{_whc(row['input'])} -> {_whc(row['output'])} {bf}".rstrip()
        )
    lines.append(
        f"Total: {len(network.layers)} layers, {network.kernel_weights:,} conv weights "
        f"(W), {network.params_with_biases:,} with biases and BN scales, "
        f"{network.weight_floats:,} floats in .weights, BFLOPS {network.bflops:.3f}"
    )
    return "\n".join(lines)
