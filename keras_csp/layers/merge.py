"""Darknet's residual ``[shortcut]`` and channel-slicing ``[route]`` as Keras layers."""

import warnings

from keras_csp.backend import keras, register, tf


@register
class DarknetShortcut(keras.layers.Layer):
    """``out = x + from`` with Darknet's rules for tensors of different shapes.

    The output has the shape of ``x`` (the ``-1`` input). When channel counts differ, the
    first ``min(C_x, C_from)`` channels are summed and the rest of ``x`` passes through
    (stage 1 of every CSPResNe(X)t cfg). When ``from`` is spatially larger by an integer
    factor ``s`` it is sampled as ``from[::s, ::s]`` (the old ResNet baselines). Same-shape
    inputs are better served by ``keras.layers.Add``.
    """

    def call(self, inputs):
        x, skip = inputs
        cx, cs = x.shape[-1], skip.shape[-1]
        hx, hs = x.shape[1], skip.shape[1]
        if hx is not None and hs is not None and hs != hx:
            step = hs // hx
            skip = skip[:, ::step, ::step, :]
        if cs > cx:
            skip = skip[..., :cx]
        elif cs < cx:
            skip = tf.pad(skip, [[0, 0], [0, 0], [0, 0], [0, cx - cs]])
        return x + skip

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@register
class ChannelRange(keras.layers.Layer):
    """Channels ``start:stop`` of the input.

    One part of a Cross Stage Partial split (Section 3.1 splits the base layer "through
    channel" into ``[x0', x0'']``; unequal parts serve the partial-ratio ablation of Table 1),
    and Darknet's ``[route] groups=G group_id=I``: channels ``I*w:(I+1)*w`` with
    ``w = channels // G``.
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= int(start) < int(stop):
            raise ValueError(f"ChannelRange needs 0 <= start < stop, got start={start}, stop={stop}")
        self.start = int(start)
        self.stop = int(stop)

    def channel_range(self, channels):
        """``(start, stop)`` of the channels kept from an input of ``channels`` channels."""
        return self.start, self.stop

    def call(self, inputs):
        start, stop = self.channel_range(inputs.shape[-1])
        return inputs[..., start:stop]

    def compute_output_shape(self, input_shape):
        start, stop = self.channel_range(input_shape[-1])
        return tuple(input_shape[:-1]) + (stop - start,)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@register
class ChannelSlice(ChannelRange):
    """Deprecated alias of :class:`ChannelRange`, kept so that models saved with it load:
    the ``group_id``-th of ``groups`` equal channel slices. Use
    ``ChannelRange(group_id * w, (group_id + 1) * w)``, ``w = channels // groups``."""

    def __init__(self, groups, group_id, **kwargs):
        if not 0 <= group_id < groups:
            raise ValueError(f"group_id must be in [0, {groups}), got {group_id}")
        warnings.warn("ChannelSlice(groups, group_id) is deprecated; use ChannelRange(start, stop).",
                      DeprecationWarning, stacklevel=2)
        # Not ChannelRange.__init__: the range follows from the input's width (channel_range).
        keras.layers.Layer.__init__(self, **kwargs)
        self.groups = int(groups)
        self.group_id = int(group_id)

    def channel_range(self, channels):
        width = channels // self.groups
        return self.group_id * width, (self.group_id + 1) * width

    def get_config(self):
        return {**keras.layers.Layer.get_config(self), "groups": self.groups, "group_id": self.group_id}


@register
class RepeatChannels(keras.layers.Layer):
    """Each channel ``repeats`` times in place: channel ``c * repeats + k`` is input ``c``.

    With a depth-multiplier-1 depthwise conv after it, this computes a depthwise conv with
    ``depth_multiplier=repeats`` (same kernel order), which the TFLite GPU delegate rejects
    on inputs of more than one channel. It lowers to RESHAPE, CONCATENATION and RESHAPE,
    all rank 4, so the delegate runs it.
    """

    def __init__(self, repeats, **kwargs):
        super().__init__(**kwargs)
        if int(repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = int(repeats)

    def call(self, inputs):
        if self.repeats == 1:
            return inputs
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        if height is None or width is None:
            dynamic = tf.shape(inputs)
            height, width = dynamic[1], dynamic[2]
        columns = tf.reshape(inputs, [-1, height * width, channels, 1])
        repeated = tf.concat([columns] * self.repeats, axis=-1)
        return tf.reshape(repeated, [-1, height, width, channels * self.repeats])

    def compute_output_shape(self, input_shape):
        channels = None if input_shape[-1] is None else input_shape[-1] * self.repeats
        return tuple(input_shape[:-1]) + (channels,)

    def get_config(self):
        return {**super().get_config(), "repeats": self.repeats}
