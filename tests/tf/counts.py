"""Prints the parameter counts of the keras.applications models that
tests/param_counts.rs checks the standard library against: for each, the
total, the trainable and the non-trainable count, built with weights=None
at Keras's default input size and 1000 classes.

Run with TensorFlow 2.21 / Keras 3.15 from the repository's root:
    python tests/tf/counts.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from keras import applications  # noqa: E402

MODELS = [
    ("MobileNet", {}),
    ("MobileNet", {"alpha": 0.75}),
    ("MobileNetV2", {}),
    ("DenseNet121", {}),
    ("EfficientNetB0", {}),
    ("InceptionV3", {}),
]


def unet(classes=2, filters=64):
    """stdlib/unet.cnn's U-Net in Keras's functional API: two 3x3 `same`
    convolutions with ReLU per level, 2x2 max pooling down, 2x2 stride-2
    transposed convolutions up, the encoder's features concatenated
    before the decoder's, a 1x1 softmax convolution."""
    from keras import layers

    def double_conv(x, f):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(f, 3, padding="same", activation="relu")(x)

    inputs = keras.Input((256, 256, 1))
    skips, x = [], inputs
    for level in range(4):
        x = double_conv(x, filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = double_conv(x, filters * 16)
    for level in reversed(range(4)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2)(x)
        x = double_conv(layers.Concatenate()([skips[level], x]), filters * 2**level)
    outputs = layers.Conv2D(classes, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def size(weights):
    return sum(int(keras.ops.size(w)) for w in weights)


def main():
    builds = [
        (name, options, lambda n=name, o=options: getattr(applications, n)(weights=None, **o))
        for name, options in MODELS
    ]
    builds.append(("U-Net (stdlib/unet.cnn)", {}, unet))
    for name, options, build in builds:
        model = build()
        trainable = size(model.trainable_weights)
        frozen = size(model.non_trainable_weights)
        print(f"{name}{options or ''}: {model.count_params()} total, {trainable} trainable, {frozen} non-trainable")


if __name__ == "__main__":
    main()
