"""Records TensorFlow's gradients of max pooling with tied maxima.

Writes `tests/tf/ties.rs`, which `tests/reference_ops.rs` and
`tests/codegen_window.rs` include: for each case the input `x`, the
upstream gradient `dy`, TensorFlow's output `y` and its input gradient `dx`
(`tape.gradient(y, x, output_gradients=dy)`), as f32 literals that round
trip exactly. Run from the repository root with TensorFlow 2.21 / Keras 3.15:

    python tests/tf/ties.py

The three ops, as cnnc defines them:

* `global_max_pool` is Keras's `GlobalMaxPooling2D`, which is
  `tf.reduce_max(x, axis=[1, 2])`; TensorFlow's gradient of `Max`
  (`_MinOrMaxGrad` in `math_grad.py`) is `indicators / num_selected * dy`:
  the gradient is split equally among the tied maxima.
* `depth_maxpool(size)` is the depth pooling layer of Hands-On ML
  (3rd edition, chapter 14): reshape the channels into groups of `size`
  and `tf.reduce_max` over the last axis, which splits equally as above.
  `tf.nn.max_pool(x, ksize=[1, 1, 1, size], strides=[1, 1, 1, size])`
  computes the same forward pass but has no gradient: TensorFlow raises
  UnimplementedError, recorded in the header of the output.
* `maxpool` is Keras's `MaxPooling2D` (`tf.nn.max_pool2d`), whose gradient
  (`MaxPoolGrad`) sends each window's `dy` to one maximum, the first in
  row-major order.

oneDNN, on by default on x86 Linux, does not change these values: a run
with TF_ENABLE_ONEDNN_OPTS=0 wrote the same file but for its header.
"""

import os
import platform
import sys

import numpy as np
import tensorflow as tf
import keras

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ties.rs")


def f32(values):
    return np.asarray(values, dtype=np.float32)


def gradient(layer, x, dy):
    """The layer's output and TensorFlow's vector-Jacobian product for dy."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    dx = tape.gradient(y, x, output_gradients=tf.constant(dy))
    return y.numpy(), dx.numpy()


def depth_pool(size):
    """Hands-On ML's DepthPool: channel groups of `size`, reduce_max each."""

    def pool(x):
        shape = tf.shape(x)
        groups = shape[-1] // size
        grouped = tf.reshape(x, tf.concat([shape[:-1], [groups, size]], axis=0))
        return tf.reduce_max(grouped, axis=-1)

    return pool


def relu_of(shape, seed, negative_channels):
    """relu(z) for a random z whose listed channels are all negative: those
    feature maps are all zeros after the ReLU, a tie over every position."""
    rng = np.random.default_rng(seed)
    z = rng.integers(-8, 9, size=shape).astype(np.float32) / 4
    z[..., negative_channels] = -np.abs(z[..., negative_channels]) - 0.25
    return tf.nn.relu(z).numpy()


def global_cases():
    cases = []
    # Every value of each feature map equal: 1/9 of dy each.
    x = np.zeros([1, 3, 3, 2], np.float32)
    x[..., 0], x[..., 1] = 0.5, -1.25
    cases.append(("all_equal", x, f32([[1.0, -3.0]])))
    # After a ReLU: channels 1 and 4 all zero (six-way ties), the others
    # with zeros below a positive maximum; 6 channels fill one f32x4 and two
    # scalar lanes of the kernel.
    x = relu_of([2, 2, 3, 6], 11, [1, 4])
    dy = f32([[1.0, 5.0, -2.0, 0.5, 3.0, -1.0], [2.0, -6.0, 1.0, 4.0, 7.0, 0.25]])
    cases.append(("relu_zeroed", x, dy))
    # Distinct values, then ties of two, three and one (no tie) among 16.
    x = np.arange(48, dtype=np.float32).reshape([1, 4, 4, 3]) % 13 / 4 - 1
    x[0, 1, 2, 0] = x[0, 2, 1, 0] = 5.0
    x[0, 0, 3, 1] = x[0, 2, 2, 1] = x[0, 3, 0, 1] = 4.5
    x[0, 3, 3, 2] = 6.0
    cases.append(("two_and_three_of_many", x, f32([[5.0, 1.0, -2.0]])))
    # The maximum at the first and the last position; in channel 1 at the
    # first only, with the last one just below it.
    x = np.full([1, 3, 4, 2], -2.0, np.float32)
    x[0, 1, 1] = [-1.0, -1.5]
    x[0, 0, 0] = x[0, 2, 3] = [0.75, 0.75]
    x[0, 2, 3, 1] = 0.5
    cases.append(("first_and_last", x, f32([[-3.0, 2.0]])))
    layer = keras.layers.GlobalMaxPooling2D()
    return [(name, x, dy) + gradient(layer, x, dy) for name, x, dy in cases]


def depth_cases():
    cases = []
    # One pixel, two groups of 3 equal values: 1/3 of dy each.
    x = f32([[[[2.0, 2.0, 2.0, -0.5, -0.5, -0.5]]]])
    cases.append(("all_equal", 3, x, f32([[[[1.0, 5.0]]]])))
    # After a ReLU, groups of 4: channels 0-3 and 8-11 all zero.
    x = relu_of([2, 1, 3, 12], 23, [0, 1, 2, 3, 8, 9, 10, 11])
    dy = np.arange(18, dtype=np.float32).reshape([2, 1, 3, 3]) / 2 - 4
    cases.append(("relu_zeroed", 4, x, dy))
    # Groups of 5: a tie of two in the middle, of three, and none.
    x = f32([[[[0.5, 3.0, 1.0, 3.0, -1.0, 4.0, 4.0, 2.0, 4.0, 0.0,
                -2.0, -1.0, 1.0, 0.5, 0.25]]]])
    cases.append(("two_and_three_of_many", 5, x, f32([[[[7.0, 1.0, 3.0]]]])))
    # Groups of 4 with the maximum at the first and the last channel.
    x = f32([[[[1.5, -1.0, 0.0, 1.5, 2.0, 1.0, 1.0, 1.75]]]])
    cases.append(("first_and_last", 4, x, f32([[[[-3.0, 2.0]]]])))
    return [
        (name, size, x, dy) + gradient(depth_pool(size), x, dy)
        for name, size, x, dy in cases
    ]


def pool_cases():
    cases = []
    # 2x2 windows of equal values, tiling: dy to each window's top left.
    x = np.full([1, 4, 4, 1], 1.5, np.float32)
    cases.append(("all_equal", 2, 2, "valid", x, f32([1.0, 2.0, 3.0, 4.0]).reshape([1, 2, 2, 1])))
    # Overlapping 2x2 windows of stride 1 on a constant image: the first
    # maximum of each window is its top left, so dy does not spread.
    x = np.full([1, 3, 3, 1], -0.5, np.float32)
    cases.append(("all_equal_overlapping", 2, 1, "valid", x, f32([1.0, 2.0, 3.0, 4.0]).reshape([1, 2, 2, 1])))
    # After a ReLU, same padding on a 3x3 image, two channels: zeros tie.
    x = relu_of([1, 3, 3, 2], 31, [1])
    dy = f32(np.arange(8) + 1).reshape([1, 2, 2, 2])
    cases.append(("relu_zeroed_same", 2, 2, "same", x, dy))
    # A 3x3 window with its maximum at the first and the last position.
    x = f32([3.0, 1.0, 0.0, 2.0, -1.0, 1.0, 0.0, 2.5, 3.0]).reshape([1, 3, 3, 1])
    cases.append(("first_and_last", 3, 3, "valid", x, f32([[[[5.0]]]])))
    out = []
    for name, size, stride, padding, x, dy in cases:
        layer = keras.layers.MaxPooling2D(pool_size=size, strides=stride, padding=padding)
        out.append((name, size, stride, padding, x, dy) + gradient(layer, x, dy))
    return out


def depth_max_pool_gradient_error():
    """What TensorFlow says when asked for tf.nn.max_pool's depth gradient."""
    x = tf.constant(f32([[[[1.0, 3.0, 3.0, 2.0, 2.0, 2.0]]]]))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.max_pool(x, ksize=[1, 1, 1, 3], strides=[1, 1, 1, 3], padding="VALID")
    try:
        tape.gradient(y, x)
    except tf.errors.UnimplementedError as error:
        return "UnimplementedError: " + error.message.split("}}")[-1].strip()
    return "no error: the gradient exists"


def literal(values):
    """f32 literals, each the shortest decimal that rounds back to it."""
    return "&[" + ", ".join(np.format_float_positional(v, unique=True, trim="0") for v in values.ravel()) + "]"


def case(name, x, dy, y, dx):
    return (
        f"Case {{ name: {name!r}, shape: {list(x.shape)}, x: {literal(x)}, "
        f"dy: {literal(dy)}, y: {literal(y)}, dx: {literal(dx)} }}"
    ).replace("'", '"')


def main():
    lines = [
        "// @generated by tests/tf/ties.py: do not edit; run the script again.",
        f"// TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__},",
        f"// Python {platform.python_version()}, TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}.",
        "// tf.nn.max_pool with ksize = strides = [1, 1, 1, 3], asked for its gradient:",
        f"// {depth_max_pool_gradient_error()}",
        "//! TensorFlow's gradients of max pooling with tied maxima (see `tests/tf/ties.py`).",
        "#![allow(dead_code)]",
        "",
        "use cnnc::graph::Padding;",
        "",
        "/// One input, upstream gradient, and TensorFlow's output and input gradient.",
        "pub struct Case {",
        "    pub name: &'static str,",
        "    /// The input's shape, NHWC.",
        "    pub shape: [usize; 4],",
        "    pub x: &'static [f32],",
        "    pub dy: &'static [f32],",
        "    pub y: &'static [f32],",
        "    pub dx: &'static [f32],",
        "}",
        "",
        "/// `keras.layers.GlobalMaxPooling2D` (`tf.reduce_max` over height and width).",
        "pub const GLOBAL_MAX_POOL: &[Case] = &[",
    ]
    lines += [f"    {case(*c)}," for c in global_cases()]
    lines += [
        "];",
        "",
        "/// Hands-On ML's depth pooling (groups of `size` channels, `tf.reduce_max`): `(size, case)`.",
        "pub const DEPTH_MAX_POOL: &[(usize, Case)] = &[",
    ]
    lines += [f"    ({size}, {case(name, x, dy, y, dx)})," for name, size, x, dy, y, dx in depth_cases()]
    lines += [
        "];",
        "",
        "/// `keras.layers.MaxPooling2D(pool_size, strides, padding)`: `(size, stride, padding, case)`.",
        "pub const MAX_POOL: &[(usize, usize, Padding, Case)] = &[",
    ]
    for name, size, stride, padding, x, dy, y, dx in pool_cases():
        pad = "Padding::Same" if padding == "same" else "Padding::Valid"
        lines.append(f"    ({size}, {stride}, {pad}, {case(name, x, dy, y, dx)}),")
    lines += ["];", ""]
    with open(OUT, "w") as out:
        out.write("\n".join(lines))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
