"""Records TensorFlow's gradients of small models for cnnc's gradient
program (tests/tf_gradients.rs, `cnnc grad`).

For each case below it writes, into tests/tf/grads/:
  NAME.cnn  the model in cnnc's language;
  NAME.npz  the same model's weights as Keras holds them, named as cnnc
            names them (`w.conv1.kernel`, moving statistics included), an
            input batch `x` and an upstream gradient `dy` of the output's
            shape, and for MODE in `inference` and `training` (Keras's
            `training=False` and `training=True`): `MODE.output` (the
            model's output), `MODE.input` (d sum(dy * output) / d x) and
            `MODE.grad.NAME` per trainable weight, all recorded with
            tf.GradientTape.

Run with TensorFlow 2.21 / Keras 3.15 from the repository's root:
    python tests/tf/grads.py > tests/tf/grads.out
It prints the versions it used, then one line per file written; names of
cases as arguments record only those (`python tests/tf/grads.py winograd`).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grads")
BATCH = 4


def conv_bn_relu():
    source = """model conv_bn_relu : [6, 6, 3] {
    conv(4, 3, padding: same, use_bias: false) -> batchnorm -> relu
}
"""
    x = keras.Input((6, 6, 3))
    conv = layers.Conv2D(4, 3, padding="same", use_bias=False)
    bn = layers.BatchNormalization()
    y = layers.ReLU()(bn(conv(x)))
    names = {"conv1.kernel": conv.kernel, **batchnorm("batchnorm1", bn)}
    return source, keras.Model(x, y), names


def residual():
    # stdlib/resnet.cnn's residual_unit: HOML's ResidualUnit with a strided
    # projection on the skip path.
    source = """use resnet
model residual : [6, 6, 3] {
    residual_unit(4, stride: 2)
}
"""
    x = keras.Input((6, 6, 3))
    conv1 = layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)
    bn1 = layers.BatchNormalization()
    conv2 = layers.Conv2D(4, 3, padding="same", use_bias=False)
    bn2 = layers.BatchNormalization()
    skip_conv = layers.Conv2D(4, 1, strides=2, padding="same", use_bias=False)
    skip_bn = layers.BatchNormalization()
    main = bn2(conv2(layers.ReLU()(bn1(conv1(x)))))
    y = layers.ReLU()(layers.Add()([main, skip_bn(skip_conv(x))]))
    unit = "residual_unit1"
    names = {
        f"{unit}.conv1.kernel": conv1.kernel,
        **batchnorm(f"{unit}.batchnorm1", bn1),
        f"{unit}.conv2.kernel": conv2.kernel,
        **batchnorm(f"{unit}.batchnorm2", bn2),
        f"{unit}.skip_conv.kernel": skip_conv.kernel,
        **batchnorm(f"{unit}.skip_bn", skip_bn),
    }
    return source, keras.Model(x, y), names


def separable():
    source = """model separable : [5, 5, 3] {
    separable_conv(4, 3, padding: same, activation: relu)
}
"""
    x = keras.Input((5, 5, 3))
    conv = layers.SeparableConv2D(4, 3, padding="same", activation="relu")
    y = conv(x)
    names = {
        "separable_conv1.depthwise.kernel": conv.depthwise_kernel,
        "separable_conv1.pointwise.kernel": conv.pointwise_kernel,
        "separable_conv1.pointwise.bias": conv.bias,
    }
    return source, keras.Model(x, y), names


def se():
    # stdlib/se.cnn's se_block: reference_models.py's se_block.
    source = """use se
model se : [4, 4, 8] {
    se_block(ratio: 4)
}
"""
    x = keras.Input((4, 4, 8))
    squeeze = layers.Dense(2, activation="relu")
    excite = layers.Dense(8, activation="sigmoid")
    scale = excite(squeeze(layers.GlobalAveragePooling2D()(x)))
    y = layers.Multiply()([x, layers.Reshape((1, 1, 8))(scale)])
    names = {
        "se_block1.squeeze.kernel": squeeze.kernel,
        "se_block1.squeeze.bias": squeeze.bias,
        "se_block1.excite.kernel": excite.kernel,
        "se_block1.excite.bias": excite.bias,
    }
    return source, keras.Model(x, y), names


def dense_softmax():
    source = """model dense_softmax : [3, 3, 2] {
    flatten
    dense(5, activation: softmax)
}
"""
    x = keras.Input((3, 3, 2))
    dense = layers.Dense(5, activation="softmax")
    y = dense(layers.Flatten()(x))
    names = {"dense1.kernel": dense.kernel, "dense1.bias": dense.bias}
    return source, keras.Model(x, y), names


def winograd():
    # Two 3x3 stride-1 convolutions of a size where cnnc's cost model puts
    # the forward pass, the input gradient and the kernel gradient of both
    # on F(4x4, 3x3) at this batch (tests/tf_gradients.rs checks the plan),
    # one padded `same` and one `valid`.
    source = """model winograd : [16, 16, 8] {
    conv(16, 3, padding: same, activation: relu)
    conv(16, 3, padding: valid)
}
"""
    x = keras.Input((16, 16, 8))
    conv1 = layers.Conv2D(16, 3, padding="same", activation="relu")
    conv2 = layers.Conv2D(16, 3, padding="valid")
    y = conv2(conv1(x))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
    }
    return source, keras.Model(x, y), names


def activations():
    # The activations added after the chapter, each on the same
    # convolution's output. 72 inputs to a unit spread its values over
    # about (-6, 6), so that the clipped pieces of relu6, hard_sigmoid and
    # hard_swish are reached.
    source = """model activations : [4, 4, 8] {
    let z = conv(8, 3, padding: same)
    let a = z -> relu6
    let b = z -> swish
    let c = z -> gelu
    let d = z -> gelu(approximate: true)
    let e = z -> hard_sigmoid
    let f = z -> hard_swish
    let g = z -> mish
    concat(a, b, c, d, e, f, g)
}
"""
    x = keras.Input((4, 4, 8))
    conv = layers.Conv2D(8, 3, padding="same")
    z = conv(x)
    branches = [
        keras.activations.relu6,
        keras.activations.silu,
        lambda t: keras.activations.gelu(t, approximate=False),
        lambda t: keras.activations.gelu(t, approximate=True),
        keras.activations.hard_sigmoid,
        keras.activations.hard_silu,
        keras.activations.mish,
    ]
    y = layers.Concatenate()([layers.Activation(f)(z) for f in branches])
    names = {"conv1.kernel": conv.kernel, "conv1.bias": conv.bias}
    return source, keras.Model(x, y), names


def batchnorm_flags():
    # Inception-v3's conv2d_bn (BatchNormalization(scale=False)) and its
    # mirror (center=False).
    source = """model batchnorm_flags : [5, 5, 3] {
    conv(4, 3, padding: same, use_bias: false) -> batchnorm(scale: false) -> relu
    conv(4, 1, use_bias: false) -> batchnorm(center: false)
}
"""
    x = keras.Input((5, 5, 3))
    conv1 = layers.Conv2D(4, 3, padding="same", use_bias=False)
    bn1 = layers.BatchNormalization(scale=False)
    conv2 = layers.Conv2D(4, 1, use_bias=False)
    bn2 = layers.BatchNormalization(center=False)
    y = bn2(conv2(layers.ReLU()(bn1(conv1(x)))))
    names = {
        "conv1.kernel": conv1.kernel,
        "batchnorm1.beta": bn1.beta,
        "batchnorm1.moving_mean": bn1.moving_mean,
        "batchnorm1.moving_variance": bn1.moving_variance,
        "conv2.kernel": conv2.kernel,
        "batchnorm2.gamma": bn2.gamma,
        "batchnorm2.moving_mean": bn2.moving_mean,
        "batchnorm2.moving_variance": bn2.moving_variance,
    }
    return source, keras.Model(x, y), names


def reshape():
    # Keras's Reshape with an inferred dimension: a convolution on the
    # reshaped image, then a flat reshape into a dense layer.
    source = """model reshaped : [3, 4, 2] {
    conv(4, 1) -> reshape([4, -1, 2])
    conv(3, 1) -> reshape([-1])
    dense(3)
}
"""
    x = keras.Input((3, 4, 2))
    conv1 = layers.Conv2D(4, 1)
    conv2 = layers.Conv2D(3, 1)
    dense = layers.Dense(3)
    y = layers.Reshape((4, -1, 2))(conv1(x))
    y = dense(layers.Reshape((-1,))(conv2(y)))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
        "dense1.kernel": dense.kernel,
        "dense1.bias": dense.bias,
    }
    return source, keras.Model(x, y), names


def grouped():
    # Keras's Conv2D(groups=g): filter block j reads input channel block j;
    # two groups, then four with stride 2 and TensorFlow's same padding.
    source = """model grouped : [7, 7, 8] {
    conv(8, 3, padding: same, groups: 2) -> relu
    conv(12, 3, stride: 2, padding: same, groups: 4, use_bias: false) -> batchnorm
}
"""
    x = keras.Input((7, 7, 8))
    conv1 = layers.Conv2D(8, 3, padding="same", groups=2)
    conv2 = layers.Conv2D(12, 3, strides=2, padding="same", groups=4, use_bias=False)
    bn = layers.BatchNormalization()
    y = bn(conv2(layers.ReLU()(conv1(x))))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        **batchnorm("batchnorm1", bn),
    }
    return source, keras.Model(x, y), names


def slicing():
    # Channel slices as Keras Lambdas of x[..., a:b]: ShuffleNet's split
    # (one half through a convolution, the other passed on, concatenated
    # back), and a negative index.
    source = """model slicing : [5, 5, 3] {
    let t = conv(8, 3, padding: same) -> relu
    let kept = t -> channels(0, 3)
    let branch = t -> channels(3, 8) -> conv(4, 3, padding: same)
    concat(branch, kept) -> channels(-5, -1)
}
"""
    x = keras.Input((5, 5, 3))
    conv1 = layers.Conv2D(8, 3, padding="same")
    conv2 = layers.Conv2D(4, 3, padding="same")
    t = layers.ReLU()(conv1(x))
    kept = layers.Lambda(lambda v: v[..., 0:3])(t)
    branch = conv2(layers.Lambda(lambda v: v[..., 3:8])(t))
    joined = layers.Concatenate()([branch, kept])
    y = layers.Lambda(lambda v: v[..., -5:-1])(joined)
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
    }
    return source, keras.Model(x, y), names


def batchnorm(prefix, bn):
    return {
        f"{prefix}.gamma": bn.gamma,
        f"{prefix}.beta": bn.beta,
        f"{prefix}.moving_mean": bn.moving_mean,
        f"{prefix}.moving_variance": bn.moving_variance,
    }


def random_value(rng, name, shape):
    """Weights away from Keras's initial values, so that every term of a
    gradient counts (a moving variance stays positive)."""
    if name.endswith("moving_variance") or name.endswith("gamma"):
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith("moving_mean") or name.endswith("beta") or name.endswith("bias"):
        return rng.uniform(-0.5, 0.5, shape)
    return rng.uniform(-0.7, 0.7, shape)


def record(name, build, seed):
    source, model, names = build()
    rng = np.random.default_rng(seed)
    arrays = {}
    for weight, variable in names.items():
        value = random_value(rng, weight, tuple(variable.shape)).astype(np.float32)
        variable.assign(value)
        arrays[f"w.{weight}"] = value
    trainable = {id(v): w for w, v in names.items() if v.trainable}
    assert len(trainable) == len(model.trainable_weights), name
    x = rng.uniform(-1.0, 1.0, (BATCH,) + tuple(model.input.shape[1:])).astype(np.float32)
    dy = rng.normal(0.0, 1.0, (BATCH,) + tuple(model.output.shape[1:])).astype(np.float32)
    arrays["x"], arrays["dy"] = x, dy
    # Each mode from the same weights: a training-mode call moves Keras's
    # moving statistics, which cnnc's gradient program leaves alone.
    saved = {w: v.numpy() for w, v in names.items()}
    for mode, training in (("inference", False), ("training", True)):
        for weight, variable in names.items():
            variable.assign(saved[weight])
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = model(xt, training=training)
            total = tf.reduce_sum(y * dy)
        variables = model.trainable_weights
        grads = tape.gradient(total, [xt] + variables)
        arrays[f"{mode}.output"] = y.numpy()
        arrays[f"{mode}.input"] = grads[0].numpy()
        for variable, grad in zip(variables, grads[1:]):
            arrays[f"{mode}.grad.{trainable[id(variable)]}"] = grad.numpy()
    with open(os.path.join(OUT, f"{name}.cnn"), "w") as f:
        f.write(source)
    np.savez(os.path.join(OUT, f"{name}.npz"), **arrays)
    print(f"{name}: {len(names)} weights ({len(trainable)} trainable), x {list(x.shape)}, dy {list(dy.shape)}")


def main():
    """Records every case, or those named on the command line."""
    print(f"# tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}")
    os.makedirs(OUT, exist_ok=True)
    cases = [
        conv_bn_relu,
        residual,
        separable,
        se,
        dense_softmax,
        winograd,
        activations,
        batchnorm_flags,
        reshape,
        grouped,
        slicing,
    ]
    wanted = set(sys.argv[1:])
    unknown = wanted - {build.__name__ for build in cases}
    if unknown:
        sys.exit(f"no such case: {', '.join(sorted(unknown))}")
    for seed, build in enumerate(cases):
        if not wanted or build.__name__ in wanted:
            record(build.__name__, build, seed)


if __name__ == "__main__":
    main()
