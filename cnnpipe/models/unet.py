"""U-Net (Ronneberger et al. 2015): encoder/decoder with skip connections."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from cnnpipe.models.backbone import conv_bn_relu


def build_unet(
    input_shape: tuple[int, int, int],
    filters: Sequence[int],
    n_outputs: int,
) -> keras.Model:
    """``filters`` lists the encoder widths, the last one being the bottleneck.

    ``n_outputs == 1`` gives a sigmoid mask; more gives per-pixel softmax over classes
    (channel 0 = background). The input side must be divisible by 2**(len(filters)-1).
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs

    # --- encoder (contracting path): two convs per level, keep the output for the skip
    skips = []
    for level, width in enumerate(filters[:-1]):
        x = conv_bn_relu(x, width, name=f"enc{level}_1")
        x = conv_bn_relu(x, width, name=f"enc{level}_2")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"enc{level}_pool")(x)

    # --- bottleneck
    x = conv_bn_relu(x, filters[-1], name="bottleneck_1")
    x = conv_bn_relu(x, filters[-1], name="bottleneck_2")

    # --- decoder (expanding path): learned up-sampling, concatenate the skip, two convs
    for level in reversed(range(len(filters) - 1)):
        width = filters[level]
        x = layers.Conv2DTranspose(width, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_skip")([x, skips[level]])
        x = conv_bn_relu(x, width, name=f"dec{level}_1")
        x = conv_bn_relu(x, width, name=f"dec{level}_2")

    activation = "sigmoid" if n_outputs == 1 else "softmax"
    outputs = layers.Conv2D(n_outputs, 1, activation=activation, dtype="float32", name="mask")(x)
    return keras.Model(inputs, outputs, name="unet")
