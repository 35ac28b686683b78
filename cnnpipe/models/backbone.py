"""The shared convolutional base: VGG-style blocks, fully convolutional so one trained
base serves 28x28 classification and 64x64 scenes alike."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


def conv_bn_relu(
    x: keras.KerasTensor, filters: int, name: str, strides: int = 1, bn_momentum: float = 0.99
) -> keras.KerasTensor:
    """3x3 conv (no bias: BatchNorm supplies it) -> BatchNorm -> ReLU."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_backbone(
    filters: Sequence[int],
    convs_per_block: int,
    channels: int = 1,
    name: str = "backbone",
    bn_momentum: float = 0.99,
) -> keras.Model:
    """Blocks of ``convs_per_block`` 3x3 convs, max-pooling between blocks.

    The first block has a single conv: at full resolution a second one costs as much as
    the rest of the network on CPU and adds little on 28x28 inputs (measured: 4x slower).
    Spatial size is left open (``None``) so the same weights run on any input side.
    ``bn_momentum``: lower it for short runs on little data (a few hundred steps), whose
    BatchNorm moving statistics would otherwise still be near their initial values.
    """
    inputs = keras.Input((None, None, channels), name=f"{name}_input")
    x = inputs
    for block, width in enumerate(filters):
        if block > 0:
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
        n_convs = 1 if block == 0 else convs_per_block
        for i in range(n_convs):
            x = conv_bn_relu(x, width, name=f"block{block + 1}_{i + 1}", bn_momentum=bn_momentum)
    return keras.Model(inputs, x, name=name)
