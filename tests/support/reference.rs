//! A plain reference implementation of every primitive op, for testing the
//! back end's kernels against.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/reference.rs"]
//! mod reference;
//! ```
//!
//! Tensors are batch-first NHWC `ArrayD<f32>`: a tensor has shape `[batch]`
//! followed by the op's per-example shape from the IR. Weights come in the
//! order and layouts of [`cnnc::ops::params`]. The semantics are
//! TensorFlow's / Keras 3's; each function says which convention it follows.
//!
//! Everything is written as nested loops over indices on flat row-major
//! copies of the inputs, accumulating in f64: slow, but easy to check by eye.
//! (Flat `Vec` indexing rather than `ArrayD` indexing keeps the loops fast
//! enough in a debug build, where the test code is not optimised.)

#![allow(dead_code)]

use cnnc::graph::{Activation, Interpolation, Op, Padding, PoolKind};
use cnnc::ops::{output_size, same_padding, transposed_output_size};
use ndarray::{ArrayD, Axis, IxDyn};

/// Keras' `backend.epsilon()`: the clipping bound of probabilities in the
/// cross-entropy.
pub const KERAS_EPSILON: f64 = 1e-7;

/// SELU's scale, as in Keras and TensorFlow.
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;
/// SELU's alpha, as in Keras and TensorFlow.
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;

/// Applies `op` to `inputs` with weights `params`.
///
/// `training` switches batch norm to batch statistics; dropout in training
/// mode has no reference (the mask is random) and panics: use
/// [`dropout_with_mask`]. `Input` has no computation and panics.
pub fn forward(
    op: &Op,
    inputs: &[&ArrayD<f32>],
    params: &[&ArrayD<f32>],
    training: bool,
) -> ArrayD<f32> {
    assert!(
        op.arity().accepts(inputs.len()),
        "`{}` does not take {} inputs",
        op.name(),
        inputs.len()
    );
    let x = inputs.first().copied();
    let one = || x.expect("the op takes an input");
    match op {
        Op::Input { .. } => {
            panic!("`input` has no reference: the model's input is given, not computed")
        }
        Op::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            bias,
            groups,
        } => {
            expect_params(op, params, 1 + usize::from(*bias));
            let k = params[0];
            assert_eq!(
                k.shape()[..2],
                [n(kernel[0]), n(kernel[1])],
                "conv kernel size"
            );
            assert_eq!(k.shape()[3], n(*filters), "conv kernel filters");
            grouped_conv2d(
                one(),
                k,
                bias.then(|| params[1]),
                Window {
                    stride: *stride,
                    dilation: *dilation,
                    padding: *padding,
                },
                n(*groups),
            )
        }
        Op::ConvTranspose2d {
            filters,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            bias,
        } => {
            expect_params(op, params, 1 + usize::from(*bias));
            let k = params[0];
            assert_eq!(
                k.shape()[..3],
                [n(kernel[0]), n(kernel[1]), n(*filters)],
                "transposed conv kernel size and filters"
            );
            conv_transpose2d(
                one(),
                k,
                bias.then(|| params[1]),
                *stride,
                *dilation,
                (*padding, *output_padding),
            )
        }
        Op::Upsample { factor, mode } => {
            expect_params(op, params, 0);
            upsample(one(), *factor, *mode)
        }
        Op::DepthwiseConv2d {
            multiplier,
            kernel,
            stride,
            padding,
            dilation,
            bias,
        } => {
            expect_params(op, params, 1 + usize::from(*bias));
            let k = params[0];
            assert_eq!(
                k.shape()[..2],
                [n(kernel[0]), n(kernel[1])],
                "depthwise kernel size"
            );
            assert_eq!(k.shape()[3], n(*multiplier), "depthwise multiplier");
            depthwise_conv2d(
                one(),
                k,
                bias.then(|| params[1]),
                *stride,
                *dilation,
                *padding,
            )
        }
        Op::Dense { units, bias } => {
            expect_params(op, params, 1 + usize::from(*bias));
            assert_eq!(params[0].shape()[1], n(*units), "dense units");
            dense(one(), params[0], bias.then(|| params[1]))
        }
        Op::Pool2d {
            kind,
            size,
            stride,
            padding,
        } => {
            expect_params(op, params, 0);
            pool2d(one(), *kind, *size, *stride, *padding)
        }
        Op::Pad { .. } => {
            expect_params(op, params, 0);
            pad(one(), op.pad_amounts())
        }
        Op::GlobalPool { kind } => {
            expect_params(op, params, 0);
            global_pool(one(), *kind)
        }
        Op::DepthMaxPool { size } => {
            expect_params(op, params, 0);
            depth_max_pool(one(), n(*size))
        }
        Op::Flatten => {
            expect_params(op, params, 0);
            flatten(one())
        }
        Op::Reshape { shape } => {
            expect_params(op, params, 0);
            reshape(one(), shape)
        }
        Op::ChannelSlice { start, end } => {
            expect_params(op, params, 0);
            channel_slice(one(), *start, *end)
        }
        Op::Dropout { .. } => {
            expect_params(op, params, 0);
            assert!(
                !training,
                "dropout in training mode has no reference (its mask is random): \
                 use reference::dropout_with_mask with the back end's mask"
            );
            one().clone()
        }
        Op::BatchNorm {
            epsilon,
            center,
            scale,
            ..
        } => {
            // gamma (without `scale: false`), beta (without `center:
            // false`), the moving mean and variance.
            let learned = usize::from(*scale) + usize::from(*center);
            expect_params(op, params, learned + 2);
            let channels = one().shape()[one().ndim() - 1];
            let ones = ArrayD::from_elem(IxDyn(&[channels]), 1.0f32);
            let zeros = ArrayD::from_elem(IxDyn(&[channels]), 0.0f32);
            let gamma = if *scale { params[0] } else { &ones };
            let beta = if *center { params[learned - 1] } else { &zeros };
            if training {
                let (mean, variance) = batchnorm_moments(one());
                batchnorm(one(), gamma, beta, &mean, &variance, *epsilon)
            } else {
                batchnorm(
                    one(),
                    gamma,
                    beta,
                    params[learned],
                    params[learned + 1],
                    *epsilon,
                )
            }
        }
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => {
            expect_params(op, params, 0);
            lrn(one(), n(*depth_radius), *bias, *alpha, *beta)
        }
        Op::ScaleBias => {
            expect_params(op, params, 2);
            scale_bias(one(), params[0], params[1])
        }
        Op::Rbf { units } => {
            expect_params(op, params, 1);
            assert_eq!(params[0].shape()[1], n(*units), "rbf units");
            rbf(one(), params[0])
        }
        Op::Activation(a) => {
            expect_params(op, params, 0);
            activation(one(), *a)
        }
        Op::Add => {
            expect_params(op, params, 0);
            add(inputs)
        }
        Op::Concat { axis } => {
            expect_params(op, params, 0);
            concat(inputs, *axis)
        }
        Op::Multiply => {
            expect_params(op, params, 0);
            multiply(inputs[0], inputs[1])
        }
        // Training-graph ops: their reference is the loss function below and
        // finite differences of the forward ops, not a forward computation.
        Op::Labels { .. }
        | Op::Upstream { .. }
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. }
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => {
            panic!(
                "`{}` is a training-graph op with no forward reference",
                op.name()
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers: flat copies, shapes, windows.

fn n(v: u64) -> usize {
    usize::try_from(v).expect("size fits in usize")
}

fn expect_params(op: &Op, params: &[&ArrayD<f32>], count: usize) {
    assert_eq!(
        params.len(),
        count,
        "`{}` takes {count} weights, got {}",
        op.name(),
        params.len()
    );
}

/// The values of `x` in row-major (logical) order, whatever its memory layout.
fn flat(x: &ArrayD<f32>) -> Vec<f32> {
    x.iter().copied().collect()
}

/// An array of shape `shape` from row-major values.
fn array(shape: &[usize], values: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape matches the values")
}

/// `[batch, height, width, channels]` of an image tensor.
fn image(x: &ArrayD<f32>) -> [usize; 4] {
    match x.shape() {
        &[b, h, w, c] => [b, h, w, c],
        s => panic!("expected an image [batch, height, width, channels], got {s:?}"),
    }
}

/// The size of the last axis and the number of vectors along it.
fn rows_and_last(x: &ArrayD<f32>) -> (usize, usize) {
    let last = *x.shape().last().expect("rank at least 1");
    let rows = x.len().checked_div(last).unwrap_or(0);
    (rows, last)
}

/// Spatial axis `axis` (0: height, 1: width) of a sliding window: the
/// output length and the padding before the first input position (`same`
/// pads per [`cnnc::ops::same_padding`], the odd pixel after; `valid` pads
/// nothing; explicit padding pads as given). Explicit padding's length is
/// worked out here, not by `cnnc::ops::output_size`, so that the tests
/// check it: TensorFlow's `(padded - effective) / stride + 1` rounded down,
/// or with `ceil` PyTorch's `ceil_mode`: rounded up, less one when the last
/// window would start at or past `before + input` (in the padding after).
fn window_axis(
    input: usize,
    kernel: u64,
    stride: u64,
    dilation: u64,
    padding: Padding,
    axis: usize,
) -> (usize, usize) {
    let Padding::Explicit { pads, ceil } = padding else {
        let out = output_size(input as u64, kernel, stride, dilation, padding.axis(axis))
            .expect("the window fits into the input");
        let before = match padding {
            Padding::Same => same_padding(input as u64, kernel, stride, dilation).0,
            _ => 0,
        };
        return (n(out), n(before));
    };
    let [before, after] = pads[axis].map(n);
    let effective = (n(kernel) - 1) * n(dilation) + 1;
    let padded = before + input + after;
    assert!(padded >= effective, "the window fits into the padded input");
    let quotient = (padded - effective) as f64 / stride as f64;
    let mut out = if ceil {
        quotient.ceil()
    } else {
        quotient.floor()
    } as usize
        + 1;
    if ceil && (out - 1) * n(stride) >= before + input {
        out -= 1;
    }
    (out, before)
}

/// The input position that tap `tap` of output position `out` reads, or
/// `None` when it falls on padding.
fn source(
    out: usize,
    tap: usize,
    stride: u64,
    dilation: u64,
    before: usize,
    input: usize,
) -> Option<usize> {
    let pos = (out * n(stride) + tap * n(dilation)) as isize - before as isize;
    if pos >= 0 && (pos as usize) < input {
        Some(pos as usize)
    } else {
        None
    }
}

/// Applies `f` to each value in f64.
fn map(x: &ArrayD<f32>, f: impl Fn(f64) -> f64) -> ArrayD<f32> {
    x.mapv(|v| f(f64::from(v)) as f32)
}

// ---------------------------------------------------------------------------
// Convolutions and dense layers.

/// `tf.nn.conv2d` (Keras's `Conv2D`) of `x` `[b, h, w, c]`
/// with `kernel` `[kh, kw, c, filters]`, plus `bias` `[filters]`.
///
/// `out[b, oy, ox, f] = bias[f] + sum over ky, kx, c of
/// x[b, oy * sh + ky * dh - top, ox * sw + kx * dw - left, c] * kernel[ky, kx, c, f]`,
/// where positions outside the input read zero.
pub fn conv2d(
    x: &ArrayD<f32>,
    kernel: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    stride: [u64; 2],
    dilation: [u64; 2],
    padding: Padding,
) -> ArrayD<f32> {
    let window = Window {
        stride,
        dilation,
        padding,
    };
    grouped_conv2d(x, kernel, bias, window, 1)
}

/// A convolution's stride, dilation and padding.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Vertical and horizontal stride.
    pub stride: [u64; 2],
    /// Vertical and horizontal dilation.
    pub dilation: [u64; 2],
    /// Padding.
    pub padding: Padding,
}

/// Keras's `Conv2D(groups=g)` (TensorFlow's `conv2d` with an input of
/// `g` times the kernel's channels) of `x` `[b, h, w, c]` with `kernel`
/// `[kh, kw, c / g, filters]`, plus `bias` `[filters]`: the filters split
/// into `g` consecutive blocks of `filters / g`, and block `j` reads input
/// channels `j * c / g .. (j + 1) * c / g`.
///
/// `out[b, oy, ox, f] = bias[f] + sum over ky, kx, i < c / g of
/// x[b, iy, ix, j * c / g + i] * kernel[ky, kx, i, f]` with `j = f / (filters / g)`.
pub fn grouped_conv2d(
    x: &ArrayD<f32>,
    kernel: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    window: Window,
    groups: usize,
) -> ArrayD<f32> {
    let Window {
        stride,
        dilation,
        padding,
    } = window;
    let [batch, h, w, c] = image(x);
    let &[kh, kw, kc, filters] = kernel.shape() else {
        panic!(
            "conv kernel must be [kh, kw, in / groups, out], got {:?}",
            kernel.shape()
        )
    };
    assert_eq!(kc * groups, c, "conv kernel input channels times groups");
    assert_eq!(filters % groups, 0, "filters split into the groups");
    let per_group = filters / groups;
    let (oh, top) = window_axis(h, kh as u64, stride[0], dilation[0], padding, 0);
    let (ow, left) = window_axis(w, kw as u64, stride[1], dilation[1], padding, 1);
    let xs = flat(x);
    let ks = flat(kernel);
    let bs = bias.map(flat);
    if let Some(b) = &bs {
        assert_eq!(b.len(), filters, "conv bias size");
    }
    let mut out = vec![0f32; batch * oh * ow * filters];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for f in 0..filters {
                    let first = (f / per_group) * kc;
                    let mut acc = bs.as_ref().map_or(0.0, |bs| f64::from(bs[f]));
                    for ky in 0..kh {
                        let Some(iy) = source(oy, ky, stride[0], dilation[0], top, h) else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) = source(ox, kx, stride[1], dilation[1], left, w) else {
                                continue;
                            };
                            // x[b, iy, ix, first + i] and kernel[ky, kx, i, f] for all i.
                            let xp = &xs[((b * h + iy) * w + ix) * c + first..][..kc];
                            let kp = &ks[(ky * kw + kx) * kc * filters + f..];
                            for i in 0..kc {
                                acc += f64::from(xp[i]) * f64::from(kp[i * filters]);
                            }
                        }
                    }
                    out[((b * oh + oy) * ow + ox) * filters + f] = acc as f32;
                }
            }
        }
    }
    array(&[batch, oh, ow, filters], out)
}

/// Keras 3's `Conv2DTranspose`, which calls `tf.nn.conv2d_transpose`: the
/// gradient of `tf.nn.conv2d` with respect to its input, of `x` `[b, h, w,
/// c]` with `kernel` `[kh, kw, filters, c]` (Keras's layout), plus `bias`
/// `[filters]`. The output's size is Keras's
/// ([`cnnc::ops::transposed_output_size`]), and `padding` is that of the
/// convolution from the output back to `x`: `same` pads the output-sized
/// image as [`cnnc::ops::same_padding`] says (`top`, `left`).
///
/// Every input value is scattered over the output:
/// `out[b, iy * sh + ky * dh - top, ix * sw + kx * dw - left, f] +=
/// x[b, iy, ix, c] * kernel[ky, kx, f, c]`, positions outside the output
/// dropped.
pub fn conv_transpose2d(
    x: &ArrayD<f32>,
    kernel: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    stride: [u64; 2],
    dilation: [u64; 2],
    (padding, output_padding): (Padding, Option<[u64; 2]>),
) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    let &[kh, kw, filters, kc] = kernel.shape() else {
        panic!(
            "transposed conv kernel must be [kh, kw, filters, in], got {:?}",
            kernel.shape()
        )
    };
    assert_eq!(kc, c, "transposed conv kernel input channels");
    let axis = |i: usize, input: usize, k: usize| {
        let extra = output_padding.map(|p| p[i]);
        let out = transposed_output_size(
            input as u64,
            k as u64,
            stride[i],
            dilation[i],
            padding,
            extra,
        )
        .expect("a transposed convolution of this size");
        let before = match padding {
            Padding::Same => same_padding(out, k as u64, stride[i], dilation[i]).0,
            Padding::Valid => 0,
            Padding::Explicit { .. } => panic!("a transposed convolution takes same or valid"),
        };
        (n(out), n(before) as isize)
    };
    let (oh, top) = axis(0, h, kh);
    let (ow, left) = axis(1, w, kw);
    let (xs, ks) = (flat(x), flat(kernel));
    let mut out = vec![0f64; batch * oh * ow * filters];
    let place = |i: usize, k: usize, s: u64, d: u64, before: isize, size: usize| {
        let pos = (i * n(s) + k * n(d)) as isize - before;
        (pos >= 0 && (pos as usize) < size).then_some(pos as usize)
    };
    for b in 0..batch {
        for iy in 0..h {
            for ix in 0..w {
                for ky in 0..kh {
                    let Some(oy) = place(iy, ky, stride[0], dilation[0], top, oh) else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(ox) = place(ix, kx, stride[1], dilation[1], left, ow) else {
                            continue;
                        };
                        for f in 0..filters {
                            let mut acc = 0.0;
                            for ci in 0..c {
                                let xv = xs[((b * h + iy) * w + ix) * c + ci];
                                let kv = ks[((ky * kw + kx) * filters + f) * c + ci];
                                acc += f64::from(xv) * f64::from(kv);
                            }
                            out[((b * oh + oy) * ow + ox) * filters + f] += acc;
                        }
                    }
                }
            }
        }
    }
    if let Some(bias) = bias {
        let bs = flat(bias);
        assert_eq!(bs.len(), filters, "transposed conv bias size");
        for (i, v) in out.iter_mut().enumerate() {
            *v += f64::from(bs[i % filters]);
        }
    }
    array(
        &[batch, oh, ow, filters],
        out.into_iter().map(|v| v as f32).collect(),
    )
}

/// Keras 3's `UpSampling2D(size, interpolation)` of `x` `[b, h, w, c]` to
/// `[b, h * fh, w * fw, c]`. `nearest` repeats every pixel over an `fh x
/// fw` block (Keras's `ops.repeat` along each axis). `bilinear` is what
/// Keras calls, `tf.image.resize(method="bilinear")` without
/// antialiasing: TensorFlow's `resize_bilinear` with half-pixel centres,
/// written as TensorFlow writes it. Along each axis of `n` pixels, output
/// pixel `o` sits at `s = (o + 0.5) * (n / (n * f)) - 0.5` of the input; it
/// reads `lower = max(floor(s), 0)` and `upper = min(ceil(s), n - 1)` with
/// `t = s - floor(s)`; then `top = x[lower_y, lower_x] + (x[lower_y,
/// upper_x] - x[lower_y, lower_x]) t_x`, `bottom` the same on row
/// `upper_y`, and `out = top + (bottom - top) t_y`.
pub fn upsample(x: &ArrayD<f32>, factor: [u64; 2], mode: Interpolation) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    let (fh, fw) = (n(factor[0]), n(factor[1]));
    let (oh, ow) = (h * fh, w * fw);
    let xs = flat(x);
    let at =
        |b: usize, y: usize, x: usize, ch: usize| f64::from(xs[((b * h + y) * w + x) * c + ch]);
    let (rows, columns) = (bilinear_axis(h, fh), bilinear_axis(w, fw));
    let mut out = vec![0f32; batch * oh * ow * c];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let value = match mode {
                        Interpolation::Nearest => at(b, oy / fh, ox / fw, ch),
                        Interpolation::Bilinear => {
                            let (y0, y1, ty) = rows[oy];
                            let (x0, x1, tx) = columns[ox];
                            let top =
                                at(b, y0, x0, ch) + (at(b, y0, x1, ch) - at(b, y0, x0, ch)) * tx;
                            let bottom =
                                at(b, y1, x0, ch) + (at(b, y1, x1, ch) - at(b, y1, x0, ch)) * tx;
                            top + (bottom - top) * ty
                        }
                    };
                    out[((b * oh + oy) * ow + ox) * c + ch] = value as f32;
                }
            }
        }
    }
    array(&[batch, oh, ow, c], out)
}

/// The gradient of [`upsample`] with respect to `x` for the upstream
/// gradient `dy`, as TensorFlow computes it: `nearest` sums each `fh x
/// fw` block of `dy` (the gradient of `repeat`); `bilinear` is
/// `ResizeBilinearGrad`, which scatters each `dy` value onto the four
/// pixels it was interpolated from with the weights `(1 - t_y)(1 - t_x)`,
/// `(1 - t_y) t_x`, `t_y (1 - t_x)` and `t_y t_x` (adding where two of them
/// are the same pixel, at the edges).
pub fn upsample_grad(
    x_shape: &[usize],
    dy: &ArrayD<f32>,
    factor: [u64; 2],
    mode: Interpolation,
) -> ArrayD<f32> {
    let &[batch, h, w, c] = x_shape else {
        panic!("expected an image shape, got {x_shape:?}")
    };
    let (fh, fw) = (n(factor[0]), n(factor[1]));
    let (oh, ow) = (h * fh, w * fw);
    assert_eq!(dy.shape(), [batch, oh, ow, c], "dy has the output's shape");
    let gs = flat(dy);
    let (rows, columns) = (bilinear_axis(h, fh), bilinear_axis(w, fw));
    let mut dx = vec![0f64; batch * h * w * c];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let g = f64::from(gs[((b * oh + oy) * ow + ox) * c + ch]);
                    let mut add = |y: usize, x: usize, weight: f64| {
                        dx[((b * h + y) * w + x) * c + ch] += weight * g;
                    };
                    match mode {
                        Interpolation::Nearest => add(oy / fh, ox / fw, 1.0),
                        Interpolation::Bilinear => {
                            let (y0, y1, ty) = rows[oy];
                            let (x0, x1, tx) = columns[ox];
                            add(y0, x0, (1.0 - ty) * (1.0 - tx));
                            add(y0, x1, (1.0 - ty) * tx);
                            add(y1, x0, ty * (1.0 - tx));
                            add(y1, x1, ty * tx);
                        }
                    }
                }
            }
        }
    }
    array(x_shape, dx.into_iter().map(|v| v as f32).collect())
}

/// TensorFlow's half-pixel interpolation of an axis of `n` pixels scaled
/// by `factor`: for each output pixel, `(lower, upper, t)`.
fn bilinear_axis(n: usize, factor: usize) -> Vec<(usize, usize, f64)> {
    let scale = n as f64 / (n * factor) as f64;
    (0..n * factor)
        .map(|o| {
            let s = (o as f64 + 0.5) * scale - 0.5;
            let floor = s.floor();
            let lower = (floor.max(0.0)) as usize;
            let upper = (s.ceil() as usize).min(n - 1);
            (lower, upper, s - floor)
        })
        .collect()
}

/// `tf.nn.depthwise_conv2d` of `x` `[b, h, w, c]` with `kernel`
/// `[kh, kw, c, multiplier]`, plus `bias` `[c * multiplier]`: input channel
/// `c` filtered by its `m`-th filter gives output channel `c * multiplier + m`.
pub fn depthwise_conv2d(
    x: &ArrayD<f32>,
    kernel: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    stride: [u64; 2],
    dilation: [u64; 2],
    padding: Padding,
) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    let &[kh, kw, kc, mult] = kernel.shape() else {
        panic!(
            "depthwise kernel must be [kh, kw, in, multiplier], got {:?}",
            kernel.shape()
        )
    };
    assert_eq!(kc, c, "depthwise kernel input channels");
    let (oh, top) = window_axis(h, kh as u64, stride[0], dilation[0], padding, 0);
    let (ow, left) = window_axis(w, kw as u64, stride[1], dilation[1], padding, 1);
    let xs = flat(x);
    let ks = flat(kernel);
    let bs = bias.map(flat);
    if let Some(b) = &bs {
        assert_eq!(b.len(), c * mult, "depthwise bias size");
    }
    let oc = c * mult;
    let mut out = vec![0f32; batch * oh * ow * oc];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for ci in 0..c {
                    for m in 0..mult {
                        let o = ci * mult + m;
                        let mut acc = bs.as_ref().map_or(0.0, |bs| f64::from(bs[o]));
                        for ky in 0..kh {
                            let Some(iy) = source(oy, ky, stride[0], dilation[0], top, h) else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(ix) = source(ox, kx, stride[1], dilation[1], left, w)
                                else {
                                    continue;
                                };
                                let xv = xs[((b * h + iy) * w + ix) * c + ci];
                                let kv = ks[((ky * kw + kx) * c + ci) * mult + m];
                                acc += f64::from(xv) * f64::from(kv);
                            }
                        }
                        out[((b * oh + oy) * ow + ox) * oc + o] = acc as f32;
                    }
                }
            }
        }
    }
    array(&[batch, oh, ow, oc], out)
}

/// Keras `Dense`: `out[..., j] = bias[j] + sum_i x[..., i] * kernel[i, j]`
/// over the last axis (any leading axes).
pub fn dense(x: &ArrayD<f32>, kernel: &ArrayD<f32>, bias: Option<&ArrayD<f32>>) -> ArrayD<f32> {
    let (rows, inn) = rows_and_last(x);
    let &[kin, units] = kernel.shape() else {
        panic!("dense kernel must be [in, units], got {:?}", kernel.shape())
    };
    assert_eq!(kin, inn, "dense kernel input size");
    let xs = flat(x);
    let ks = flat(kernel);
    let bs = bias.map(flat);
    let mut out = vec![0f32; rows * units];
    for r in 0..rows {
        for j in 0..units {
            let mut acc = bs.as_ref().map_or(0.0, |bs| f64::from(bs[j]));
            for i in 0..inn {
                acc += f64::from(xs[r * inn + i]) * f64::from(ks[i * units + j]);
            }
            out[r * units + j] = acc as f32;
        }
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank at least 1") = units;
    array(&shape, out)
}

/// LeNet-5's RBF output units: `out[..., j] = sum_i (x[..., i] - centers[i, j])^2`.
pub fn rbf(x: &ArrayD<f32>, centers: &ArrayD<f32>) -> ArrayD<f32> {
    let (rows, inn) = rows_and_last(x);
    let &[kin, units] = centers.shape() else {
        panic!("rbf centers must be [in, units], got {:?}", centers.shape())
    };
    assert_eq!(kin, inn, "rbf centers input size");
    let xs = flat(x);
    let cs = flat(centers);
    let mut out = vec![0f32; rows * units];
    for r in 0..rows {
        for j in 0..units {
            let mut acc = 0f64;
            for i in 0..inn {
                let d = f64::from(xs[r * inn + i]) - f64::from(cs[i * units + j]);
                acc += d * d;
            }
            out[r * units + j] = acc as f32;
        }
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank at least 1") = units;
    array(&shape, out)
}

// ---------------------------------------------------------------------------
// Pooling and reshaping.

/// `tf.nn.max_pool2d` / `tf.nn.avg_pool2d` (Keras `MaxPooling2D`,
/// `AveragePooling2D`). Positions on `same` padding take no part: max never
/// sees a padded zero, and the average divides by the number of the window's
/// positions inside the input.
pub fn pool2d(
    x: &ArrayD<f32>,
    kind: PoolKind,
    size: [u64; 2],
    stride: [u64; 2],
    padding: Padding,
) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    let (oh, top) = window_axis(h, size[0], stride[0], 1, padding, 0);
    let (ow, left) = window_axis(w, size[1], stride[1], 1, padding, 1);
    let xs = flat(x);
    let mut out = vec![0f32; batch * oh * ow * c];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut max = f32::NEG_INFINITY;
                    let mut sum = 0f64;
                    let mut count = 0usize;
                    for ky in 0..n(size[0]) {
                        let Some(iy) = source(oy, ky, stride[0], 1, top, h) else {
                            continue;
                        };
                        for kx in 0..n(size[1]) {
                            let Some(ix) = source(ox, kx, stride[1], 1, left, w) else {
                                continue;
                            };
                            let v = xs[((b * h + iy) * w + ix) * c + ch];
                            max = max.max(v);
                            sum += f64::from(v);
                            count += 1;
                        }
                    }
                    assert!(count > 0, "a pooling window lies entirely on padding");
                    out[((b * oh + oy) * ow + ox) * c + ch] = match kind {
                        PoolKind::Max => max,
                        PoolKind::Avg => (sum / count as f64) as f32,
                    };
                }
            }
        }
    }
    array(&[batch, oh, ow, c], out)
}

/// Keras's `ZeroPadding2D` (positive `amounts`, `[top, bottom, left,
/// right]`) and `Cropping2D` (negative): `out[b, y, x, c] = x[b, y - top,
/// x - left, c]`, zero where that falls outside `x`.
pub fn pad(x: &ArrayD<f32>, amounts: [i64; 4]) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    let [top, bottom, left, right] = amounts;
    let oh = usize::try_from(h as i64 + top + bottom).expect("rows are left");
    let ow = usize::try_from(w as i64 + left + right).expect("columns are left");
    let xs = flat(x);
    let mut out = vec![0f32; batch * oh * ow * c];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let (iy, ix) = (oy as i64 - top, ox as i64 - left);
                if !(0..h as i64).contains(&iy) || !(0..w as i64).contains(&ix) {
                    continue;
                }
                let (iy, ix) = (iy as usize, ix as usize);
                for ch in 0..c {
                    out[((b * oh + oy) * ow + ox) * c + ch] = xs[((b * h + iy) * w + ix) * c + ch];
                }
            }
        }
    }
    array(&[batch, oh, ow, c], out)
}

/// Keras `GlobalAveragePooling2D` / `GlobalMaxPooling2D`:
/// `[b, h, w, c] -> [b, c]`.
pub fn global_pool(x: &ArrayD<f32>, kind: PoolKind) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    let xs = flat(x);
    let mut out = vec![0f32; batch * c];
    for b in 0..batch {
        for ch in 0..c {
            let mut max = f32::NEG_INFINITY;
            let mut sum = 0f64;
            for y in 0..h {
                for xx in 0..w {
                    let v = xs[((b * h + y) * w + xx) * c + ch];
                    max = max.max(v);
                    sum += f64::from(v);
                }
            }
            out[b * c + ch] = match kind {
                PoolKind::Max => max,
                PoolKind::Avg => (sum / (h * w) as f64) as f32,
            };
        }
    }
    array(&[batch, c], out)
}

/// `tf.nn.max_pool` with `ksize = strides = [1, 1, 1, size]`: the max of each
/// group of `size` consecutive channels, `[..., c] -> [..., c / size]`.
pub fn depth_max_pool(x: &ArrayD<f32>, size: usize) -> ArrayD<f32> {
    let (rows, c) = rows_and_last(x);
    assert!(
        size > 0 && c % size == 0,
        "{c} channels do not split into groups of {size}"
    );
    let groups = c / size;
    let xs = flat(x);
    let mut out = vec![0f32; rows * groups];
    for r in 0..rows {
        for g in 0..groups {
            let mut max = f32::NEG_INFINITY;
            for k in 0..size {
                max = max.max(xs[r * c + g * size + k]);
            }
            out[r * groups + g] = max;
        }
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank at least 1") = groups;
    array(&shape, out)
}

/// The gradient of [`pool2d`] with respect to `x` for the upstream
/// gradient `dy`, as TensorFlow's `MaxPoolGrad` / `AvgPoolGrad`: max
/// pooling sends each window's `dy` to the window's first maximum in
/// row-major order (ties are not split), average pooling spreads `dy /
/// count` over the window's in-bounds positions; overlapping windows add.
pub fn pool2d_grad(
    x: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    kind: PoolKind,
    size: [u64; 2],
    stride: [u64; 2],
    padding: Padding,
) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    let (oh, top) = window_axis(h, size[0], stride[0], 1, padding, 0);
    let (ow, left) = window_axis(w, size[1], stride[1], 1, padding, 1);
    assert_eq!(dy.shape(), [batch, oh, ow, c], "dy has the output's shape");
    let (xs, gs) = (flat(x), flat(dy));
    let mut dx = vec![0f64; xs.len()];
    for (o, &g) in gs.iter().enumerate() {
        let (pixel, ch) = (o / c, o % c);
        let (b, oy, ox) = (pixel / (oh * ow), pixel / ow % oh, pixel % ow);
        let mut cells = Vec::new();
        for ky in 0..n(size[0]) {
            for kx in 0..n(size[1]) {
                let iy = source(oy, ky, stride[0], 1, top, h);
                let ix = source(ox, kx, stride[1], 1, left, w);
                if let (Some(iy), Some(ix)) = (iy, ix) {
                    cells.push(((b * h + iy) * w + ix) * c + ch);
                }
            }
        }
        let g = f64::from(g);
        match kind {
            PoolKind::Max => dx[first_maximum(&xs, &cells)] += g,
            PoolKind::Avg => cells.iter().for_each(|&i| dx[i] += g / cells.len() as f64),
        }
    }
    array(x.shape(), dx.into_iter().map(|v| v as f32).collect())
}

/// The gradient of [`global_pool`] with respect to `x` for the upstream
/// gradient `dy` `[b, c]`. Keras' `GlobalMaxPooling2D` is `tf.reduce_max`
/// over height and width, whose gradient (`_MinOrMaxGrad`) splits each
/// `dy[b, c]` equally among the positions equal to the maximum:
/// `dx = 1[x == max] * dy / count`. The average's is `dy / (h * w)`
/// everywhere.
pub fn global_pool_grad(x: &ArrayD<f32>, dy: &ArrayD<f32>, kind: PoolKind) -> ArrayD<f32> {
    let [batch, h, w, c] = image(x);
    assert_eq!(dy.shape(), [batch, c], "dy has the output's shape");
    let (xs, gs) = (flat(x), flat(dy));
    let mut dx = vec![0f32; xs.len()];
    for b in 0..batch {
        for ch in 0..c {
            let cells: Vec<usize> = (0..h * w).map(|p| (b * h * w + p) * c + ch).collect();
            let g = f64::from(gs[b * c + ch]);
            let shares = match kind {
                PoolKind::Max => tied_maxima(&xs, &cells),
                PoolKind::Avg => cells.clone(),
            };
            for i in &shares {
                dx[*i] = (g / shares.len() as f64) as f32;
            }
        }
    }
    array(x.shape(), dx)
}

/// The gradient of [`depth_max_pool`] with respect to `x` for the upstream
/// gradient `dy`. cnnc's `depth_maxpool(size)` is the depth pooling of
/// Hands-On ML (3rd edition, ch. 14): the channels reshaped into groups of
/// `size` and `tf.reduce_max` over each group, whose gradient splits each
/// group's `dy` equally among its tied maxima: `dx = 1[x == max] * dy /
/// count`. (`tf.nn.max_pool` with `ksize = [1, 1, 1, size]` computes the
/// same forward pass but TensorFlow has no gradient for it.)
pub fn depth_max_pool_grad(x: &ArrayD<f32>, dy: &ArrayD<f32>, size: usize) -> ArrayD<f32> {
    let (rows, c) = rows_and_last(x);
    assert!(
        size > 0 && c % size == 0,
        "{c} channels do not split into groups of {size}"
    );
    assert_eq!(dy.len(), rows * (c / size), "dy has the output's size");
    let (xs, gs) = (flat(x), flat(dy));
    let mut dx = vec![0f32; xs.len()];
    for (group, &g) in gs.iter().enumerate() {
        let cells: Vec<usize> = (0..size).map(|k| group * size + k).collect();
        let tied = tied_maxima(&xs, &cells);
        for &i in &tied {
            dx[i] = (f64::from(g) / tied.len() as f64) as f32;
        }
    }
    array(x.shape(), dx)
}

/// The first of `cells` (indices into `xs`) holding their maximum: a later
/// cell takes over only if it is greater.
fn first_maximum(xs: &[f32], cells: &[usize]) -> usize {
    cells
        .iter()
        .copied()
        .fold(cells[0], |best, i| if xs[i] > xs[best] { i } else { best })
}

/// Every one of `cells` (indices into `xs`) equal to their maximum.
fn tied_maxima(xs: &[f32], cells: &[usize]) -> Vec<usize> {
    let max = xs[first_maximum(xs, cells)];
    cells.iter().copied().filter(|&i| xs[i] == max).collect()
}

/// Keras `Flatten` on NHWC: `[b, h, w, c] -> [b, h * w * c]` in row-major
/// `(h, w, c)` order.
pub fn flatten(x: &ArrayD<f32>) -> ArrayD<f32> {
    let batch = x.shape()[0];
    let rest: usize = x.shape()[1..].iter().product();
    array(&[batch, rest], flat(x))
}

/// `x[..., start:end]` (a Keras `Lambda`) for `start < end` within the
/// last axis, a negative index counting from its end as in Python.
pub fn channel_slice(x: &ArrayD<f32>, start: i64, end: i64) -> ArrayD<f32> {
    let (rows, c) = rows_and_last(x);
    let resolve = |i: i64| if i < 0 { i + c as i64 } else { i } as usize;
    let (first, last) = (resolve(start), resolve(end));
    assert!(first < last && last <= c, "channels({start}, {end}) of {c}");
    let xs = flat(x);
    let mut out = Vec::with_capacity(rows * (last - first));
    for r in 0..rows {
        out.extend_from_slice(&xs[r * c + first..r * c + last]);
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("a tensor has a last axis") = last - first;
    array(&shape, out)
}

/// Keras `Reshape(target)`: the same values in row-major order, each
/// example in `target`'s shape, its -1 filled with what the others leave.
pub fn reshape(x: &ArrayD<f32>, target: &[i64]) -> ArrayD<f32> {
    let batch = x.shape()[0];
    let per_example: usize = x.shape()[1..].iter().product();
    let known: usize = target
        .iter()
        .filter(|&&d| d > 0)
        .map(|&d| d as usize)
        .product();
    let mut shape = vec![batch];
    shape.extend(target.iter().map(|&d| {
        if d < 0 {
            per_example / known
        } else {
            d as usize
        }
    }));
    array(&shape, flat(x))
}

// ---------------------------------------------------------------------------
// Dropout and normalisation.

/// Dropout in training mode with a given keep mask (1 kept, 0 dropped), as
/// `tf.nn.dropout` scales: `x * mask / (1 - rate)`.
pub fn dropout_with_mask(x: &ArrayD<f32>, mask: &ArrayD<f32>, rate: f64) -> ArrayD<f32> {
    assert_eq!(x.shape(), mask.shape(), "dropout mask shape");
    let xs = flat(x);
    let ms = flat(mask);
    let out = xs
        .iter()
        .zip(&ms)
        .map(|(&v, &m)| (f64::from(v) * f64::from(m) / (1.0 - rate)) as f32)
        .collect();
    array(x.shape(), out)
}

/// The batch mean and the *biased* batch variance (divided by the count, as
/// `keras.ops.moments` computes them) over all axes but the last: two `[c]`
/// arrays.
pub fn batchnorm_moments(x: &ArrayD<f32>) -> (ArrayD<f32>, ArrayD<f32>) {
    let (rows, c) = rows_and_last(x);
    assert!(rows > 0, "batch statistics of an empty batch");
    let xs = flat(x);
    let mut mean = vec![0f32; c];
    let mut variance = vec![0f32; c];
    for ch in 0..c {
        let mut sum = 0f64;
        for r in 0..rows {
            sum += f64::from(xs[r * c + ch]);
        }
        let m = sum / rows as f64;
        let mut sq = 0f64;
        for r in 0..rows {
            let d = f64::from(xs[r * c + ch]) - m;
            sq += d * d;
        }
        mean[ch] = m as f32;
        variance[ch] = (sq / rows as f64) as f32;
    }
    (array(&[c], mean), array(&[c], variance))
}

/// `gamma * (x - mean) / sqrt(variance + epsilon) + beta` over the last axis.
pub fn batchnorm(
    x: &ArrayD<f32>,
    gamma: &ArrayD<f32>,
    beta: &ArrayD<f32>,
    mean: &ArrayD<f32>,
    variance: &ArrayD<f32>,
    epsilon: f64,
) -> ArrayD<f32> {
    let (rows, c) = rows_and_last(x);
    let (g, bt, m, v) = (flat(gamma), flat(beta), flat(mean), flat(variance));
    for p in [&g, &bt, &m, &v] {
        assert_eq!(
            p.len(),
            c,
            "batchnorm weights must have one value per channel"
        );
    }
    let xs = flat(x);
    let mut out = vec![0f32; xs.len()];
    for r in 0..rows {
        for ch in 0..c {
            let normalised = (f64::from(xs[r * c + ch]) - f64::from(m[ch]))
                / (f64::from(v[ch]) + epsilon).sqrt();
            out[r * c + ch] = (f64::from(g[ch]) * normalised + f64::from(bt[ch])) as f32;
        }
    }
    array(x.shape(), out)
}

/// The moving mean and variance after one training step of batch norm on `x`,
/// as Keras 3's `BatchNormalization.call` assigns them:
/// `moving = moving * momentum + batch_stat * (1 - momentum)`.
///
/// The batch variance is the *biased* one, the same that normalises the
/// batch: Keras 3 takes both from `keras.ops.moments` (unlike tf.keras 2 /
/// `tf.compat.v1.layers`, which used Bessel's correction for the moving
/// variance). Confirmed against Keras 3.15 in `tests/reference_ops.rs`.
pub fn batchnorm_moving_update(
    x: &ArrayD<f32>,
    moving_mean: &ArrayD<f32>,
    moving_variance: &ArrayD<f32>,
    momentum: f64,
) -> (ArrayD<f32>, ArrayD<f32>) {
    let (mean, variance) = batchnorm_moments(x);
    let update = |moving: &ArrayD<f32>, batch: &ArrayD<f32>| {
        assert_eq!(moving.shape(), batch.shape(), "moving statistic shape");
        let values = flat(moving)
            .iter()
            .zip(flat(batch))
            .map(|(&old, new)| {
                (f64::from(old) * momentum + f64::from(new) * (1.0 - momentum)) as f32
            })
            .collect();
        array(batch.shape(), values)
    };
    (
        update(moving_mean, &mean),
        update(moving_variance, &variance),
    )
}

/// `tf.nn.local_response_normalization` over the last axis:
/// `sqr_sum[c] = sum of x[c']^2 for c' in [c - r, c + r] within [0, C)`,
/// `out[c] = x[c] / (bias + alpha * sqr_sum[c])^beta`. TensorFlow does not
/// divide `alpha` by the window size (Caffe and PyTorch do).
pub fn lrn(x: &ArrayD<f32>, depth_radius: usize, bias: f64, alpha: f64, beta: f64) -> ArrayD<f32> {
    let (rows, c) = rows_and_last(x);
    let xs = flat(x);
    let mut out = vec![0f32; xs.len()];
    for r in 0..rows {
        for ch in 0..c {
            let lo = ch.saturating_sub(depth_radius);
            let hi = (ch + depth_radius).min(c - 1);
            let mut sqr_sum = 0f64;
            for k in lo..=hi {
                let v = f64::from(xs[r * c + k]);
                sqr_sum += v * v;
            }
            out[r * c + ch] =
                (f64::from(xs[r * c + ch]) / (bias + alpha * sqr_sum).powf(beta)) as f32;
        }
    }
    array(x.shape(), out)
}

/// `x * coefficient[c] + bias[c]` over the last axis.
pub fn scale_bias(x: &ArrayD<f32>, coefficient: &ArrayD<f32>, bias: &ArrayD<f32>) -> ArrayD<f32> {
    let (rows, c) = rows_and_last(x);
    let (k, b) = (flat(coefficient), flat(bias));
    assert_eq!(k.len(), c, "scale_bias coefficient size");
    assert_eq!(b.len(), c, "scale_bias bias size");
    let xs = flat(x);
    let mut out = vec![0f32; xs.len()];
    for r in 0..rows {
        for ch in 0..c {
            out[r * c + ch] =
                (f64::from(xs[r * c + ch]) * f64::from(k[ch]) + f64::from(b[ch])) as f32;
        }
    }
    array(x.shape(), out)
}

// ---------------------------------------------------------------------------
// Activations.

/// The Keras activation functions; softmax over the last axis.
pub fn activation(x: &ArrayD<f32>, a: Activation) -> ArrayD<f32> {
    match a {
        Activation::Relu => map(x, |v| if v > 0.0 { v } else { 0.0 }),
        Activation::LeakyRelu { alpha } => map(x, |v| if v > 0.0 { v } else { alpha * v }),
        Activation::Elu { alpha } => map(x, |v| if v > 0.0 { v } else { alpha * (v.exp() - 1.0) }),
        Activation::Selu => map(x, |v| {
            SELU_SCALE
                * if v > 0.0 {
                    v
                } else {
                    SELU_ALPHA * (v.exp() - 1.0)
                }
        }),
        Activation::Tanh => map(x, f64::tanh),
        Activation::Sigmoid => map(x, sigmoid),
        Activation::Relu6 => map(x, |v| v.clamp(0.0, 6.0)),
        Activation::Swish => map(x, |v| v * sigmoid(v)),
        // x * P(X <= x), X standard normal.
        Activation::Gelu { approximate: false } => map(x, |v| {
            0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2))
        }),
        Activation::Gelu { approximate: true } => map(x, |v| {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v.powi(3))).tanh())
        }),
        // Keras 3: relu6(x + 3) / 6.
        Activation::HardSigmoid => map(x, |v| (v + 3.0).clamp(0.0, 6.0) / 6.0),
        Activation::HardSwish => map(x, |v| v * (v + 3.0).clamp(0.0, 6.0) / 6.0),
        // x * tanh(softplus(x)), softplus(x) = ln(1 + e^x).
        Activation::Mish => map(x, |v| v * v.exp().ln_1p().tanh()),
        Activation::Softmax => softmax(x),
    }
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Softmax over the last axis, with the row's max subtracted first.
pub fn softmax(x: &ArrayD<f32>) -> ArrayD<f32> {
    let (rows, c) = rows_and_last(x);
    let xs = flat(x);
    let mut out = vec![0f32; xs.len()];
    for r in 0..rows {
        let row = &xs[r * c..(r + 1) * c];
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (ch, e) in exps.iter().enumerate() {
            out[r * c + ch] = (e / sum) as f32;
        }
    }
    array(x.shape(), out)
}

// ---------------------------------------------------------------------------
// Merges.

/// The element-wise sum of all inputs (equal shapes).
pub fn add(inputs: &[&ArrayD<f32>]) -> ArrayD<f32> {
    let shape = inputs[0].shape();
    let mut sum = vec![0f64; inputs[0].len()];
    for x in inputs {
        assert_eq!(x.shape(), shape, "add needs equal shapes");
        for (s, v) in sum.iter_mut().zip(flat(x)) {
            *s += f64::from(v);
        }
    }
    array(shape, sum.into_iter().map(|v| v as f32).collect())
}

/// Concatenation along per-example axis `axis` (array axis `axis + 1`).
pub fn concat(inputs: &[&ArrayD<f32>], axis: usize) -> ArrayD<f32> {
    let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
    ndarray::concatenate(Axis(axis + 1), &views).expect("concat shapes agree")
}

/// `x * s` per example: `s` has `x`'s shape, or is a per-channel vector
/// `[batch, c]` / `[batch, 1, ..., 1, c]` broadcast over the other axes.
pub fn multiply(x: &ArrayD<f32>, s: &ArrayD<f32>) -> ArrayD<f32> {
    let xs = flat(x);
    let ss = flat(s);
    if x.shape() == s.shape() {
        let out = xs
            .iter()
            .zip(&ss)
            .map(|(&a, &b)| (f64::from(a) * f64::from(b)) as f32)
            .collect();
        return array(x.shape(), out);
    }
    let batch = x.shape()[0];
    let (_, c) = rows_and_last(x);
    let per_channel = s.ndim() >= 2
        && s.ndim() <= x.ndim()
        && s.shape()[0] == batch
        && *s.shape().last().expect("rank at least 2") == c
        && s.shape()[1..s.ndim() - 1].iter().all(|&d| d == 1);
    assert!(
        per_channel,
        "multiply: {:?} does not broadcast per channel onto {:?}",
        s.shape(),
        x.shape()
    );
    let per_example = xs.len() / batch.max(1);
    let mut out = vec![0f32; xs.len()];
    for b in 0..batch {
        for i in 0..per_example {
            let ch = i % c;
            let idx = b * per_example + i;
            out[idx] = (f64::from(xs[idx]) * f64::from(ss[b * c + ch])) as f32;
        }
    }
    array(x.shape(), out)
}

// ---------------------------------------------------------------------------
// Loss.

/// The mean over the rows of the binary cross-entropy of `[rows, 1]`
/// logits against labels 0 and 1, as
/// `tf.nn.sigmoid_cross_entropy_with_logits`: `-t log sigmoid(z) - (1 - t)
/// log(1 - sigmoid(z))`, in f64 (as softplus, so that a logit of 40 costs
/// 40 rather than the infinity of `log(1 - 1.0)`).
pub fn binary_crossentropy_from_logits(logits: &ArrayD<f32>, labels: &[usize]) -> f32 {
    let z = flat(logits);
    assert_eq!(z.len(), labels.len(), "one label per logit");
    let total: f64 = z
        .iter()
        .zip(labels)
        .map(|(&z, &label)| {
            assert!(label < 2, "label {label} is not 0 or 1");
            // -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) =
            // softplus(z), which f64 keeps finite for any logit.
            let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
            let z = f64::from(z);
            if label == 1 {
                softplus(-z)
            } else {
                softplus(z)
            }
        })
        .sum();
    (total / labels.len() as f64) as f32
}

/// The mean over the batch of the sparse categorical cross-entropy of
/// `[batch, classes]` probabilities (or logits) against integer labels.
///
/// Keras semantics, TensorFlow backend:
///
/// * `from_logits`: `-sum_j t_j * log_softmax(z)_j` (the row's max
///   subtracted), as `tf.nn.(sparse_)softmax_cross_entropy_with_logits`.
/// * probabilities, no smoothing (`keras.losses.SparseCategoricalCrossentropy`):
///   `q = clip(p, 1e-7, 1 - 1e-7)`, then softmax cross-entropy on `log q`,
///   i.e. `-log q_y + log sum_j q_j` (the second term is ~0 for a softmax
///   output).
/// * probabilities with label smoothing: Keras' sparse loss has no
///   `label_smoothing`, so this is `keras.losses.CategoricalCrossentropy` on
///   the one-hot labels: the target is `(1 - ls) * onehot + ls / classes`,
///   `q = clip(p / sum p, 1e-7, 1 - 1e-7)`, loss `-sum_j t_j log q_j`.
pub fn sparse_categorical_crossentropy(
    probabilities_or_logits: &ArrayD<f32>,
    labels: &[usize],
    from_logits: bool,
    label_smoothing: f32,
) -> f32 {
    let (rows, classes) = rows_and_last(probabilities_or_logits);
    assert_eq!(labels.len(), rows, "one label per example");
    let ls = f64::from(label_smoothing);
    let clip = |v: f64| v.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON);
    let ps = flat(probabilities_or_logits);
    let mut total = 0f64;
    for (r, &label) in labels.iter().enumerate() {
        assert!(
            label < classes,
            "label {label} out of range for {classes} classes"
        );
        let row: Vec<f64> = ps[r * classes..(r + 1) * classes]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let target = |j: usize| {
            let onehot = if j == label { 1.0 } else { 0.0 };
            (1.0 - ls) * onehot + ls / classes as f64
        };
        let loss = if from_logits {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let log_sum = row.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
            (0..classes)
                .map(|j| -target(j) * (row[j] - max - log_sum))
                .sum()
        } else if ls == 0.0 {
            let q: Vec<f64> = row.iter().map(|&v| clip(v)).collect();
            -q[label].ln() + q.iter().sum::<f64>().ln()
        } else {
            let sum: f64 = row.iter().sum();
            (0..classes)
                .map(|j| -target(j) * clip(row[j] / sum).ln())
                .sum()
        };
        total += loss;
    }
    (total / rows as f64) as f32
}
