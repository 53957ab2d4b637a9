"""Records TensorFlow's sparse categorical cross-entropy and its gradients,
per pixel and per example, and the binary cross-entropy of a one-channel
sigmoid mask, for cnnc's training step (tests/tf_losses.rs).

For each case below it writes, into tests/tf/losses/:
  NAME.cnn  the model in cnnc's language;
  NAME.npz  the model's weights as Keras holds them, named as cnnc names
            them (`w.conv1.kernel`), an input batch `x`, the integer
            `labels` (one per pixel, [batch, h, w], for a model whose
            output is [h, w, classes]; one per example, [batch], for a
            classifier), the model's `output`, the `loss` that
            keras.losses.SparseCategoricalCrossentropy (its default
            reduction, the mean over every label) gives, or for a sigmoid
            output of one channel keras.losses.BinaryCrossentropy (labels
            0 and 1, given to Keras as [batch, h, w, 1]), and
            `grad.NAME`, its gradient with respect to each trainable
            weight (tf.GradientTape, training=True).

Run with TensorFlow 2.21 / Keras 3.15 from the repository's root:
    python tests/tf/losses.py > tests/tf/losses.out
It prints the versions it used, then one line per file written; names of
cases as arguments record only those (`python tests/tf/losses.py
segmentation_logits`).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "losses")


def segmentation_softmax():
    # A small U-Net: a skip connection around a pooled, convolved and
    # upsampled path, per-pixel probabilities from a 1x1 convolution's
    # softmax. Keras takes the cross-entropy of a softmax output from the
    # logits the softmax was given (the `_keras_logits` it keeps on them).
    source = """model segmentation_softmax : [6, 6, 2] {
    let skip = conv(4, 3, padding: same, activation: relu)
    let deep = skip -> maxpool(2) -> conv(4, 3, padding: same, activation: relu) -> upsample(2)
    concat(deep, skip)
    conv(3, 1, activation: softmax)
}
"""
    x = keras.Input((6, 6, 2))
    conv1 = layers.Conv2D(4, 3, padding="same", activation="relu")
    conv2 = layers.Conv2D(4, 3, padding="same", activation="relu")
    conv3 = layers.Conv2D(3, 1, activation="softmax")
    skip = conv1(x)
    deep = layers.UpSampling2D(2)(conv2(layers.MaxPooling2D(2)(skip)))
    y = conv3(layers.Concatenate()([deep, skip]))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
        "conv3.kernel": conv3.kernel,
        "conv3.bias": conv3.bias,
    }
    loss = keras.losses.SparseCategoricalCrossentropy()
    return source, keras.Model(x, y), names, loss


def segmentation_logits():
    # Per-pixel logits (no activation on the last layer), on an image that
    # is not square, so that a label read along the wrong axis is caught.
    source = """model segmentation_logits : [5, 4, 1] {
    conv(4, 3, padding: same, activation: tanh)
    conv(5, 1)
}
"""
    x = keras.Input((5, 4, 1))
    conv1 = layers.Conv2D(4, 3, padding="same", activation="tanh")
    conv2 = layers.Conv2D(5, 1)
    y = conv2(conv1(x))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
    }
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return source, keras.Model(x, y), names, loss


def dense_softmax_loss():
    # The control: a classifier, one label per example.
    source = """model dense_softmax_loss : [3, 3, 2] {
    flatten
    dense(5, activation: softmax)
}
"""
    x = keras.Input((3, 3, 2))
    dense = layers.Dense(5, activation="softmax")
    y = dense(layers.Flatten()(x))
    names = {"dense1.kernel": dense.kernel, "dense1.bias": dense.bias}
    loss = keras.losses.SparseCategoricalCrossentropy()
    return source, keras.Model(x, y), names, loss


def segmentation_sigmoid():
    # Foreground or not: one sigmoid channel per pixel, scored with the
    # binary cross-entropy (Keras takes it from the sigmoid's logits).
    source = """model segmentation_sigmoid : [5, 4, 1] {
    conv(4, 3, padding: same, activation: tanh)
    conv(1, 1, activation: sigmoid)
}
"""
    x = keras.Input((5, 4, 1))
    conv1 = layers.Conv2D(4, 3, padding="same", activation="tanh")
    conv2 = layers.Conv2D(1, 1, activation="sigmoid")
    y = conv2(conv1(x))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
    }
    return source, keras.Model(x, y), names, keras.losses.BinaryCrossentropy()


def random_value(rng, name, shape):
    """Weights away from Keras's initial values (zero biases, Glorot
    kernels), so that every term of a gradient counts."""
    if name.endswith("bias"):
        return rng.uniform(-0.5, 0.5, shape)
    return rng.uniform(-0.7, 0.7, shape)


def from_logits(loss, output):
    """Whether Keras takes this loss from logits (traced): asked to, or
    given a softmax's or a sigmoid's output, whose input it takes instead
    (keras/src/backend/tensorflow/nn.py, `_get_logits`)."""
    if loss.get_config()["from_logits"] or hasattr(output, "_keras_logits"):
        return True
    return output.op.type in ("Softmax", "Sigmoid")


def record(name, build, seed, batch):
    source, model, names, loss = build()
    rng = np.random.default_rng(seed)
    arrays = {}
    for weight, variable in names.items():
        value = random_value(rng, weight, tuple(variable.shape)).astype(np.float32)
        variable.assign(value)
        arrays[f"w.{weight}"] = value
    assert len(names) == len(model.trainable_weights), name
    by_id = {id(v): w for w, v in names.items()}
    x = rng.uniform(-1.0, 1.0, (batch,) + tuple(model.input.shape[1:])).astype(np.float32)
    binary = isinstance(loss, keras.losses.BinaryCrossentropy)
    classes = 2 if binary else model.output.shape[-1]
    labels = rng.integers(0, classes, (batch,) + tuple(model.output.shape[1:-1]))
    # The binary cross-entropy takes targets of the output's shape.
    target = labels[..., None].astype(np.float32) if binary else labels
    arrays["x"], arrays["labels"] = x, labels.astype(np.int64)
    traced = {}

    # A tf.function, as model.fit runs its training step: traced, a
    # softmax's output is the Softmax op that Keras takes the logits from.
    @tf.function
    def step(x, labels):
        with tf.GradientTape() as tape:
            y = model(x, training=True)
            value = loss(labels, y)
        traced["from_logits"] = from_logits(loss, y)
        return y, value, tape.gradient(value, model.trainable_weights)

    y, value, grads = step(tf.constant(x), tf.constant(target))
    arrays["output"], arrays["loss"] = y.numpy(), value.numpy()
    # The default reduction is the mean over every label: every pixel of
    # every example (here from the probabilities, eagerly, which is the
    # same to rounding).
    each = type(loss)(
        from_logits=loss.get_config()["from_logits"], reduction=None
    )(target, y)
    assert each.shape == labels.shape, name
    assert np.isclose(each.numpy().mean(), value.numpy(), rtol=1e-5), name
    for variable, grad in zip(model.trainable_weights, grads):
        arrays[f"grad.{by_id[id(variable)]}"] = grad.numpy()
    with open(os.path.join(OUT, f"{name}.cnn"), "w") as f:
        f.write(source)
    np.savez(os.path.join(OUT, f"{name}.npz"), **arrays)
    print(
        f"{name}: {len(names)} weights, x {list(x.shape)}, labels {list(labels.shape)}, "
        f"loss {value.numpy():.8g} (mean of {labels.size}), from logits: {traced['from_logits']}"
    )


def main():
    print(f"# tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}")
    os.makedirs(OUT, exist_ok=True)
    cases = [
        (segmentation_softmax, 4),
        (segmentation_logits, 3),
        (dense_softmax_loss, 4),
        (segmentation_sigmoid, 3),
    ]
    wanted = set(sys.argv[1:])
    unknown = wanted - {build.__name__ for build, _ in cases}
    if unknown:
        sys.exit(f"no such case: {', '.join(sorted(unknown))}")
    for seed, (build, batch) in enumerate(cases):
        if not wanted or build.__name__ in wanted:
            record(build.__name__, build, seed, batch)


if __name__ == "__main__":
    main()
