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


def upsample_nearest():
    # Keras's UpSampling2D repeats each pixel (ops.repeat); a convolution
    # on each side, so that the gradient through it reaches a kernel.
    source = """model upsample_nearest : [3, 4, 2] {
    conv(3, 1) -> upsample([2, 3])
    conv(2, 3, padding: same)
}
"""
    x = keras.Input((3, 4, 2))
    conv1 = layers.Conv2D(3, 1)
    conv2 = layers.Conv2D(2, 3, padding="same")
    y = conv2(layers.UpSampling2D((2, 3))(conv1(x)))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
    }
    return source, keras.Model(x, y), names


def upsample_bilinear():
    # UpSampling2D(interpolation="bilinear") is tf.image.resize: half-pixel
    # centres, no antialiasing; factors of 2 and 3, and of 3 and 1.
    source = """model upsample_bilinear : [3, 4, 2] {
    conv(3, 1) -> upsample([2, 3], mode: bilinear)
    conv(2, 3, padding: same) -> upsample([3, 1], mode: bilinear)
}
"""
    x = keras.Input((3, 4, 2))
    conv1 = layers.Conv2D(3, 1)
    conv2 = layers.Conv2D(2, 3, padding="same")
    y = layers.UpSampling2D((2, 3), interpolation="bilinear")(conv1(x))
    y = layers.UpSampling2D((3, 1), interpolation="bilinear")(conv2(y))
    names = {
        "conv1.kernel": conv1.kernel,
        "conv1.bias": conv1.bias,
        "conv2.kernel": conv2.kernel,
        "conv2.bias": conv2.bias,
    }
    return source, keras.Model(x, y), names


def conv_transpose():
    # Conv2DTranspose, stride 2: `same`; `valid` with an output padding of
    # one row and a non-square kernel; an even kernel with `same` and an
    # output padding, without a bias.
    source = """model transposed : [3, 4, 3] {
    conv_transpose(4, 3, stride: 2, padding: same, activation: tanh)
    conv_transpose(3, [3, 2], stride: 2, output_padding: [1, 0])
    conv_transpose(2, 2, stride: 2, padding: same, output_padding: 1, use_bias: false)
}
"""
    x = keras.Input((3, 4, 3))
    t1 = layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="tanh")
    t2 = layers.Conv2DTranspose(3, (3, 2), strides=2, output_padding=(1, 0))
    t3 = layers.Conv2DTranspose(2, 2, strides=2, padding="same", output_padding=1, use_bias=False)
    y = t3(t2(t1(x)))
    names = {
        "conv_transpose1.kernel": t1.kernel,
        "conv_transpose1.bias": t1.bias,
        "conv_transpose2.kernel": t2.kernel,
        "conv_transpose2.bias": t2.bias,
        "conv_transpose3.kernel": t3.kernel,
    }
    return source, keras.Model(x, y), names


def frozen():
    # The train section's `freeze` is Keras's `layer.trainable = False`:
    # the frozen layers' weights get no gradient, and the frozen batchnorm
    # normalises with its moving statistics even when training=True, while
    # the other batchnorm uses the batch's.
    source = """model frozen : [6, 6, 3] {
    conv(4, 3, padding: same, use_bias: false) as stem
    batchnorm as stem_bn
    relu
    conv(4, 3, padding: same) -> batchnorm -> relu
}
train { freeze: ["stem*"] }
"""
    x = keras.Input((6, 6, 3))
    stem = layers.Conv2D(4, 3, padding="same", use_bias=False)
    stem_bn = layers.BatchNormalization()
    conv = layers.Conv2D(4, 3, padding="same")
    bn = layers.BatchNormalization()
    stem.trainable = False
    stem_bn.trainable = False
    y = layers.ReLU()(stem_bn(stem(x)))
    y = layers.ReLU()(bn(conv(y)))
    names = {
        "stem.kernel": stem.kernel,
        **batchnorm("stem_bn", stem_bn),
        "conv1.kernel": conv.kernel,
        "conv1.bias": conv.bias,
        **batchnorm("batchnorm1", bn),
    }
    return source, keras.Model(x, y), names


class ExplicitConv(layers.Layer):
    """A convolution with a bias and ReLU, padded explicitly as
    tf.nn.conv2d(padding=[[0, 0], [top, bottom], [left, right], [0, 0]])
    pads (Keras's Conv2D takes only "same" and "valid")."""

    def __init__(self, filters, size, pads, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.size, self.pads = filters, size, pads

    def build(self, shape):
        self.kernel = self.add_weight(shape=(self.size, self.size, shape[-1], self.filters), name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), name="bias")

    def call(self, x):
        y = tf.nn.conv2d(x, self.kernel, 1, [[0, 0], *self.pads, [0, 0]])
        return tf.nn.relu(y + self.bias)


class ExplicitSeparable(layers.Layer):
    """SeparableConv2D (depth multiplier 1, a bias) on the input padded by
    tf.pad: a depthwise convolution with explicit padding, then a 1x1 one."""

    def __init__(self, filters, size, pads, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.size, self.pads = filters, size, pads

    def build(self, shape):
        channels = shape[-1]
        self.depthwise = self.add_weight(shape=(self.size, self.size, channels, 1), name="depthwise")
        self.pointwise = self.add_weight(shape=(1, 1, channels, self.filters), name="pointwise")
        self.bias = self.add_weight(shape=(self.filters,), name="bias")

    def call(self, x):
        padded = tf.pad(x, [[0, 0], *self.pads, [0, 0]])
        y = tf.nn.depthwise_conv2d(padded, self.depthwise, [1, 1, 1, 1], "VALID")
        return tf.nn.conv2d(y, self.pointwise, 1, "VALID") + self.bias


def mean_of_cells(x, size, stride, pads):
    """Average pooling with explicit padding, each window's mean taken over
    its cells of the image, padded cells left out (as tf.nn.avg_pool2d does
    with "same"; it takes no explicit padding): the sums of the zero-padded
    image over the counts of image cells."""
    paddings = [[0, 0], *pads, [0, 0]]
    ones = tf.ones_like(x[..., :1])
    sums = tf.nn.avg_pool2d(tf.pad(x, paddings), size, stride, "VALID")
    counts = tf.nn.avg_pool2d(tf.pad(ones, paddings), size, stride, "VALID")
    return sums / counts


def padding():
    # Keras's ZeroPadding2D and Cropping2D; tf.nn.conv2d and tf.nn.max_pool2d
    # with explicit padding; the average over the image's cells of explicitly
    # padded windows; a separable convolution padded explicitly. The last
    # pooling is PyTorch's ceil_mode (Keras has none): ceil((4 - 3) / 2) + 1
    # = 2 windows per axis, the second hanging one cell past the image,
    # which is the mean of cells with one more row and column of padding.
    source = """model padding : [7, 6, 3] {
    zero_padding([1, 0, 2, 1])
    let t = conv(4, 3, padding: [2, 1, 0, 3], activation: relu) -> cropping([[1, 0], [0, 2]])
    let a = t -> maxpool(3, stride: 2, padding: [1, 1, 0, 2])
    let b = t -> avgpool(3, stride: 2, padding: 1)
    concat(a, b) -> separable_conv(3, 2, padding: [1, 0, 0, 1])
    avgpool(3, stride: 2, ceil_mode: true)
}
"""
    x = keras.Input((7, 6, 3))
    conv = ExplicitConv(4, 3, [[2, 1], [0, 3]])
    t = layers.Cropping2D(((1, 0), (0, 2)))(conv(layers.ZeroPadding2D(((1, 0), (2, 1)))(x)))
    a = layers.Lambda(lambda v: tf.nn.max_pool2d(v, 3, 2, [[0, 0], [1, 1], [0, 2], [0, 0]]))(t)
    b = layers.Lambda(lambda v: mean_of_cells(v, 3, 2, [[1, 1], [1, 1]]))(t)
    separable = ExplicitSeparable(3, 2, [[1, 0], [0, 1]])
    y = separable(layers.Concatenate()([a, b]))
    y = layers.Lambda(lambda v: mean_of_cells(v, 3, 2, [[0, 1], [0, 1]]))(y)
    names = {
        "conv1.kernel": conv.kernel,
        "conv1.bias": conv.bias,
        "separable_conv1.depthwise.kernel": separable.depthwise,
        "separable_conv1.pointwise.kernel": separable.pointwise,
        "separable_conv1.pointwise.bias": separable.bias,
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
    # A frozen layer's variables are not among the model's trainable weights.
    trainable_ids = {id(v) for v in model.trainable_weights}
    trainable = {id(v): w for w, v in names.items() if id(v) in trainable_ids}
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
        upsample_nearest,
        upsample_bilinear,
        conv_transpose,
        frozen,
        padding,
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
