//! The window kernels (pooling, global and depth max pooling, LRN, depthwise
//! convolution; forward and backward) against the reference implementation
//! on odd shapes, their gradients against explicit vector-Jacobian products
//! that are themselves checked by finite differences of the reference
//! forward, bitwise determinism under any split of the domain, and the
//! errors of malformed descriptions.

#[path = "support/reference.rs"]
mod reference;

// Recorded by `tests/tf/ties.py`; generated, so rustfmt leaves it as written.
#[rustfmt::skip]
#[path = "tf/ties.rs"]
mod tf_ties;

use std::collections::HashMap;
use std::ops::Range;

use cnnc::codegen::contraction::bf16::{round, widen as bf16_widen};
use cnnc::codegen::window::{Buffer, Pass, Role, Window, WindowKind, WindowStorage};
use cnnc::codegen::{CodegenError, Jit, Storage};
use cnnc::graph::{AxisPadding, Padding, PoolKind};
use cnnc::ops::{output_size, same_padding};
use ndarray::{ArrayD, IxDyn};

// ---------------------------------------------------------------------------
// Data, running kernels, comparing.

/// A small deterministic generator of test data in [lo, hi).
fn data(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * unit
        })
        .collect()
}

/// `n` distinct values, at least `gap` apart, in a scrambled order: max
/// pooling has no ties, and a perturbation smaller than `gap / 2` does not
/// move any maximum.
fn distinct(n: usize, seed: u64, gap: f32) -> Vec<f32> {
    let keys = data(n, seed, 0.0, 1.0);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]).then(a.cmp(&b)));
    let mut values = vec![0f32; n];
    for (rank, &i) in order.iter().enumerate() {
        values[i] = (rank as f32 - n as f32 / 2.0) * gap;
    }
    values
}

fn array(shape: &[usize], values: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches")
}

fn flat(x: &ArrayD<f32>) -> Vec<f32> {
    x.iter().copied().collect()
}

/// Runs `window` over its whole domain, given its read buffers by role;
/// returns the buffers it writes, by role.
fn run(jit: &mut Jit, window: &Window, inputs: &[(Role, &[f32])]) -> HashMap<Role, Vec<f32>> {
    run_split(jit, window, inputs, &[], f32::NAN)
}

/// Like [`run`], with the domain cut at `cuts` and the parts run last
/// first, into written buffers that start out as `fill`.
fn run_split(
    jit: &mut Jit,
    window: &Window,
    inputs: &[(Role, &[f32])],
    cuts: &[usize],
    fill: f32,
) -> HashMap<Role, Vec<f32>> {
    let kernel = jit
        .compile_window(window)
        .unwrap_or_else(|e| panic!("{}: {e}", window.name));
    let buffers = window.buffers().expect("a valid description");
    assert_eq!(kernel.domain, window.domain().expect("a valid description"));
    let mut storage: Vec<Vec<f32>> = buffers
        .iter()
        .map(|buffer| {
            // f32 slots: a bf16 buffer holds two values in each.
            let len = buffer.storage.slots(buffer.shape.iter().product());
            if buffer.role.is_written() {
                return vec![fill; len];
            }
            let (_, values) = inputs
                .iter()
                .find(|(role, _)| *role == buffer.role)
                .unwrap_or_else(|| panic!("{}: no {:?} given", window.name, buffer.role));
            assert_eq!(
                values.len(),
                len,
                "{}: {:?} length",
                window.name,
                buffer.role
            );
            values.to_vec()
        })
        .collect();
    let args: Vec<*mut f32> = storage.iter_mut().map(|b| b.as_mut_ptr()).collect();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(kernel.domain);
    let parts: Vec<Range<usize>> = bounds.windows(2).map(|w| w[0]..w[1]).collect();
    for part in parts.into_iter().rev() {
        // SAFETY: one buffer per entry of `window.buffers()`, in order, each
        // as long as its shape (in its storage's slots), none overlapping.
        unsafe { kernel.run(&args, part) };
    }
    buffers
        .iter()
        .zip(storage)
        .filter(|(buffer, _)| buffer.role.is_written())
        .map(|(buffer, values)| (buffer.role, values))
        .collect()
}

/// Within 1e-4 relative, or 1e-5 absolute near zero.
fn assert_close(what: &str, actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let error = (f64::from(a) - e).abs();
        assert!(
            error <= 1e-4 * e.abs() + 1e-5,
            "{what}: element {i} is {a}, expected {e}"
        );
    }
}

fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// `(output length, padding before)` of one spatial axis, as TensorFlow
/// (and PyTorch's `ceil_mode`).
fn axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: AxisPadding,
) -> Option<(usize, usize)> {
    let [i, k, s, d] = [input, kernel, stride, dilation].map(|v| v as u64);
    let out = output_size(i, k, s, d, padding)? as usize;
    let before = match padding {
        AxisPadding::Same => same_padding(i, k, s, d).0 as usize,
        AxisPadding::Explicit { before, .. } => before as usize,
    };
    Some((out, before))
}

/// Explicit padding `[top, bottom, left, right]`, rounded up with `ceil`.
fn explicit([top, bottom, left, right]: [u64; 4], ceil: bool) -> Padding {
    Padding::explicit([[top, bottom], [left, right]], ceil)
}

/// The input position of tap `t` of output `o`, if inside the input.
fn source(
    o: usize,
    t: usize,
    stride: usize,
    dilation: usize,
    before: usize,
    input: usize,
) -> Option<usize> {
    let p = (o * stride + t * dilation) as i64 - before as i64;
    (0..input as i64).contains(&p).then_some(p as usize)
}

/// `d/dx_i sum_j dy_j f(x)_j` by central differences, perturbing each of
/// `x` by about `step` (the f32 rounding of the step is accounted for).
fn finite_differences(
    x: &[f32],
    dy: &[f32],
    step: f32,
    f: impl Fn(&[f32]) -> Vec<f32>,
) -> Vec<f64> {
    let loss = |x: &[f32]| -> f64 {
        f(x).iter()
            .zip(dy)
            .map(|(&y, &g)| f64::from(y) * f64::from(g))
            .sum()
    };
    (0..x.len())
        .map(|i| {
            let mut plus = x.to_vec();
            let mut minus = x.to_vec();
            plus[i] = x[i] + step;
            minus[i] = x[i] - step;
            let width = f64::from(plus[i]) - f64::from(minus[i]);
            (loss(&plus) - loss(&minus)) / width
        })
        .collect()
}

/// Finite differences are approximate: within 1e-3, relative or absolute.
fn assert_near(what: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-3 * (1.0 + e.abs()),
            "{what}: element {i} is {a}, finite differences give {e}"
        );
    }
}

// ---------------------------------------------------------------------------
// Descriptions.

const SHAPES: [[usize; 4]; 7] = [
    [1, 5, 7, 1],
    [1, 5, 7, 3],
    [1, 7, 5, 4],
    [1, 5, 7, 6],
    [1, 5, 7, 13],
    [7, 5, 7, 13],
    [2, 1, 3, 5],
];

fn pool(
    kind: PoolKind,
    size: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    pass: Pass,
    input: [usize; 4],
) -> Window {
    Window {
        name: format!("{kind:?}pool {size:?}/{stride:?} {padding:?} {pass:?} {input:?}"),
        kind: WindowKind::Pool {
            kind,
            size,
            stride,
            padding,
        },
        pass,
        input,
        storage: Default::default(),
    }
}

/// A pooling configuration and the input it runs on.
#[derive(Debug, Clone, Copy)]
struct PoolCase {
    kind: PoolKind,
    size: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    shape: [usize; 4],
}

/// Every pooling configuration: sizes 2 and 3 (and 3x2), strides 1, 2, 3
/// (windows overlapping, tiling and leaving gaps), `same`, `valid`, and
/// explicit padding (each side less than the window), rounded down or
/// with `ceil_mode` (windows hanging over the end).
fn pool_configs() -> Vec<PoolCase> {
    let mut configs = Vec::new();
    let paddings = [
        Padding::Same,
        Padding::Valid,
        explicit([1, 0, 0, 1], false),
        explicit([0, 0, 0, 0], true),
        explicit([1, 1, 1, 0], true),
    ];
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for size in [[2, 2], [3, 3], [3, 2]] {
            for stride in [[1, 1], [2, 2], [2, 1], [3, 3]] {
                for padding in paddings {
                    for shape in SHAPES {
                        configs.push(PoolCase {
                            kind,
                            size,
                            stride,
                            padding,
                            shape,
                        });
                    }
                }
            }
        }
    }
    configs
}

/// The configurations whose windows fit their input, with their index
/// among [`pool_configs`] (which seeds their data).
fn fitting_pool_configs() -> Vec<(usize, PoolCase)> {
    pool_configs()
        .into_iter()
        .enumerate()
        .filter(|(_, c)| fits(c.shape, c.size, c.stride, [1, 1], c.padding))
        .collect()
}

fn fits(
    shape: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> bool {
    axis(shape[1], kernel[0], stride[0], dilation[0], padding.axis(0)).is_some()
        && axis(shape[2], kernel[1], stride[1], dilation[1], padding.axis(1)).is_some()
}

// ---------------------------------------------------------------------------
// Explicit vector-Jacobian products, in f64: the pooling ones are the
// reference's gradients (`support/reference.rs`), the others written here.

/// The reference's pooling gradient ([`reference::pool2d_grad`]): max
/// pooling sends `dy` to the first maximum of each window (rows, then
/// columns); average pooling spreads `dy / count` over the in-bounds cells.
fn pool_vjp(
    x: &[f32],
    dy: &[f32],
    shape: [usize; 4],
    kind: PoolKind,
    size: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
) -> Vec<f64> {
    let [n, h, w, c] = shape;
    let (oh, _) = axis(h, size[0], stride[0], 1, padding.axis(0)).expect("fits");
    let (ow, _) = axis(w, size[1], stride[1], 1, padding.axis(1)).expect("fits");
    widen(&flat(&reference::pool2d_grad(
        &array(&shape, x),
        &array(&[n, oh, ow, c], dy),
        kind,
        size.map(|s| s as u64),
        stride.map(|s| s as u64),
        padding,
    )))
}

/// The reference's global pooling gradient: max pooling splits each
/// `dy[n, c]` equally among the tied maxima of the feature map.
fn global_vjp(x: &[f32], dy: &[f32], shape: [usize; 4], kind: PoolKind) -> Vec<f64> {
    let dy = array(&[shape[0], shape[3]], dy);
    widen(&flat(&reference::global_pool_grad(
        &array(&shape, x),
        &dy,
        kind,
    )))
}

/// The reference's depth max pooling gradient: each group's `dy` split
/// equally among the group's tied maxima.
fn depth_vjp(x: &[f32], dy: &[f32], shape: [usize; 4], size: usize) -> Vec<f64> {
    let [n, h, w, c] = shape;
    let dy = array(&[n, h, w, c / size], dy);
    widen(&flat(&reference::depth_max_pool_grad(
        &array(&shape, x),
        &dy,
        size,
    )))
}

/// `dx_i = dy_i d_i^-b - 2 a b x_i sum_{|j - i| <= r} dy_j x_j d_j^(-b-1)`.
fn lrn_vjp(
    x: &[f32],
    dy: &[f32],
    channels: usize,
    radius: usize,
    bias: f64,
    alpha: f64,
    beta: f64,
) -> Vec<f64> {
    let mut dx = vec![0f64; x.len()];
    for row in 0..x.len() / channels {
        let xs: Vec<f64> = widen(&x[row * channels..][..channels]);
        let gs: Vec<f64> = widen(&dy[row * channels..][..channels]);
        let window = |i: usize| i.saturating_sub(radius)..(i + radius + 1).min(channels);
        let d: Vec<f64> = (0..channels)
            .map(|i| bias + alpha * window(i).map(|j| xs[j] * xs[j]).sum::<f64>())
            .collect();
        for i in 0..channels {
            let coupled: f64 = window(i)
                .map(|j| gs[j] * xs[j] * d[j].powf(-beta - 1.0))
                .sum();
            dx[row * channels + i] =
                gs[i] * d[i].powf(-beta) - 2.0 * alpha * beta * xs[i] * coupled;
        }
    }
    dx
}

/// A depthwise convolution's attributes.
#[derive(Debug, Clone, Copy)]
struct Conv {
    multiplier: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    bias: bool,
}

impl Conv {
    fn window(&self, pass: Pass, input: [usize; 4]) -> Window {
        Window {
            name: format!("depthwise {self:?} {pass:?} {input:?}"),
            kind: WindowKind::DepthwiseConv {
                multiplier: self.multiplier,
                kernel: self.kernel,
                stride: self.stride,
                dilation: self.dilation,
                padding: self.padding,
                bias: self.bias,
            },
            pass,
            input,
            storage: Default::default(),
        }
    }

    fn filter_len(&self, channels: usize) -> usize {
        self.kernel[0] * self.kernel[1] * channels * self.multiplier
    }

    fn forward(
        &self,
        x: &[f32],
        shape: [usize; 4],
        filter: &[f32],
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let k = array(
            &[self.kernel[0], self.kernel[1], shape[3], self.multiplier],
            filter,
        );
        let b = bias.map(|b| array(&[b.len()], b));
        let y = reference::depthwise_conv2d(
            &array(&shape, x),
            &k,
            b.as_ref(),
            self.stride.map(|s| s as u64),
            self.dilation.map(|d| d as u64),
            self.padding,
        );
        flat(&y)
    }

    /// Calls `f(b, oy, ox, iy, ix, ky, kx)` for every tap inside the input.
    fn for_taps(&self, shape: [usize; 4], mut f: impl FnMut([usize; 7])) {
        let [n, h, w, _] = shape;
        let (oh, top) = axis(
            h,
            self.kernel[0],
            self.stride[0],
            self.dilation[0],
            self.padding.axis(0),
        )
        .expect("fits");
        let (ow, left) = axis(
            w,
            self.kernel[1],
            self.stride[1],
            self.dilation[1],
            self.padding.axis(1),
        )
        .expect("fits");
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..self.kernel[0] {
                        let Some(iy) = source(oy, ky, self.stride[0], self.dilation[0], top, h)
                        else {
                            continue;
                        };
                        for kx in 0..self.kernel[1] {
                            let Some(ix) =
                                source(ox, kx, self.stride[1], self.dilation[1], left, w)
                            else {
                                continue;
                            };
                            f([b, oy, ox, iy, ix, ky, kx]);
                        }
                    }
                }
            }
        }
    }

    /// `dx[b, iy, ix, c] = sum dy[b, oy, ox, c M + m] * filter[ky, kx, c, m]`.
    fn data_vjp(&self, dy: &[f32], shape: [usize; 4], filter: &[f32]) -> Vec<f64> {
        let [_, h, w, c] = shape;
        let (m_count, kw) = (self.multiplier, self.kernel[1]);
        let [oh, ow] = self.output(shape);
        let mut dx = vec![0f64; shape.iter().product()];
        self.for_taps(shape, |[b, oy, ox, iy, ix, ky, kx]| {
            for ch in 0..c {
                for m in 0..m_count {
                    let o = ch * m_count + m;
                    let g = f64::from(dy[((b * oh + oy) * ow + ox) * c * m_count + o]);
                    dx[((b * h + iy) * w + ix) * c + ch] +=
                        g * f64::from(filter[(ky * kw + kx) * c * m_count + o]);
                }
            }
        });
        dx
    }

    /// `dfilter[ky, kx, c, m] = sum dy[b, oy, ox, c M + m] * x[b, iy, ix, c]`,
    /// and `dbias[o] = sum dy[b, oy, ox, o]`.
    fn filter_vjp(&self, x: &[f32], dy: &[f32], shape: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
        let [_, h, w, c] = shape;
        let (m_count, kw) = (self.multiplier, self.kernel[1]);
        let [oh, ow] = self.output(shape);
        let mut dfilter = vec![0f64; self.filter_len(c)];
        self.for_taps(shape, |[b, oy, ox, iy, ix, ky, kx]| {
            for ch in 0..c {
                for m in 0..m_count {
                    let o = ch * m_count + m;
                    let g = f64::from(dy[((b * oh + oy) * ow + ox) * c * m_count + o]);
                    dfilter[(ky * kw + kx) * c * m_count + o] +=
                        g * f64::from(x[((b * h + iy) * w + ix) * c + ch]);
                }
            }
        });
        let mut dbias = vec![0f64; c * m_count];
        for (i, &g) in dy.iter().enumerate() {
            dbias[i % (c * m_count)] += f64::from(g);
        }
        (dfilter, dbias)
    }

    fn output(&self, shape: [usize; 4]) -> [usize; 2] {
        let oh = axis(
            shape[1],
            self.kernel[0],
            self.stride[0],
            self.dilation[0],
            self.padding.axis(0),
        )
        .expect("fits")
        .0;
        let ow = axis(
            shape[2],
            self.kernel[1],
            self.stride[1],
            self.dilation[1],
            self.padding.axis(1),
        )
        .expect("fits")
        .0;
        [oh, ow]
    }
}

/// Depthwise configurations: multipliers 1, 2, 3 and 4 (vector lanes
/// holding one, two, or parts of input channels), strides, dilation 2,
/// `same`, `valid` and explicit padding, with and without bias, 3x3, 2x3 and 1x1 filters.
fn conv_configs() -> Vec<(Conv, [usize; 4])> {
    let mut configs = Vec::new();
    let mut k = 0;
    // Explicit padding beyond the kernel too: whole rows and columns of
    // output on padding only, which are the bias.
    let paddings = [Padding::Same, Padding::Valid, explicit([2, 0, 1, 4], false)];
    for multiplier in [1, 2, 3, 4] {
        for stride in [[1, 1], [2, 2], [1, 2]] {
            for dilation in [[1, 1], [2, 2]] {
                for padding in paddings {
                    for kernel in [[3, 3], [2, 3], [1, 1]] {
                        k += 1;
                        let conv = Conv {
                            multiplier,
                            kernel,
                            stride,
                            dilation,
                            padding,
                            bias: k % 2 == 0,
                        };
                        // A few shapes per configuration, rotating through all of them.
                        for s in 0..2 {
                            configs.push((conv, SHAPES[(k + 3 * s) % SHAPES.len()]));
                        }
                    }
                }
            }
        }
    }
    // A 2x2 filter dilated by 3 on a 2x2 input, stride 2, same padding: the
    // one window's taps all fall on padding, and the output is the bias.
    let on_padding = Conv {
        multiplier: 2,
        kernel: [2, 2],
        stride: [2, 2],
        dilation: [3, 3],
        padding: Padding::Same,
        bias: true,
    };
    configs.push((on_padding, [3, 2, 2, 3]));
    configs
}

// ---------------------------------------------------------------------------
// Pooling.

#[test]
fn pooling_matches_the_reference() {
    let mut jit = Jit::new().expect("jit");
    for (i, case) in pool_configs().into_iter().enumerate() {
        let PoolCase {
            kind,
            size,
            stride,
            padding,
            shape,
        } = case;
        let window = pool(kind, size, stride, padding, Pass::Forward, shape);
        if !fits(shape, size, stride, [1, 1], padding) {
            assert!(
                matches!(
                    jit.compile_window(&window),
                    Err(CodegenError::Malformed { .. })
                ),
                "{}",
                window.name
            );
            continue;
        }
        let x = data(shape.iter().product(), i as u64, -2.0, 2.0);
        let out = run(&mut jit, &window, &[(Role::Input, &x)]);
        let expected = reference::pool2d(
            &array(&shape, &x),
            kind,
            size.map(|s| s as u64),
            stride.map(|s| s as u64),
            padding,
        );
        assert_eq!(window.output_shape().expect("valid"), expected.shape());
        assert_close(&window.name, &out[&Role::Output], &widen(&flat(&expected)));
    }
}

/// `values` rounded to bf16, two to an f32 slot (as a bf16 buffer holds
/// them), and the f32s the rounded values are.
fn to_bf16(values: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let rounded: Vec<u16> = values.iter().map(|&v| round(v)).collect();
    let slots = rounded
        .chunks(2)
        .map(|pair| {
            let high = pair.get(1).copied().unwrap_or(0);
            f32::from_bits(u32::from(pair[0]) | u32::from(high) << 16)
        })
        .collect();
    (slots, rounded.into_iter().map(bf16_widen).collect())
}

/// The first `len` bf16 values held two to a slot in `slots`, as f32s.
fn from_bf16(slots: &[f32], len: usize) -> Vec<f32> {
    let mut values: Vec<f32> = slots
        .iter()
        .flat_map(|v| [v.to_bits() as u16, (v.to_bits() >> 16) as u16].map(bf16_widen))
        .collect();
    values.truncate(len);
    values
}

/// 2-D pooling reading `x` in bf16 computes, bit for bit, what it computes
/// on the f32s those values are, and writing `y` in bf16 stores its f32
/// result rounded; max pooling's gradient reads `x` in bf16 the same way.
/// The other window kernels, and average pooling's gradient (which does
/// not read `x`), refuse bf16.
#[test]
fn pooling_reads_and_writes_bf16_as_the_rounded_values() {
    let mut jit = Jit::new().expect("jit");
    let [f32s, bf16] = [Storage::F32, Storage::Bf16];
    for (i, case) in fitting_pool_configs() {
        let PoolCase {
            kind,
            size,
            stride,
            padding,
            shape,
        } = case;
        let forward = pool(kind, size, stride, padding, Pass::Forward, shape);
        let stored = |x, y| Window {
            storage: WindowStorage { x, y },
            ..forward.clone()
        };
        let x = data(shape.iter().product(), i as u64, -2.0, 2.0);
        let (x_slots, x_rounded) = to_bf16(&x);
        let mut output = |window: &Window, x: &[f32]| {
            run(&mut jit, window, &[(Role::Input, x)])
                .remove(&Role::Output)
                .expect("y")
        };
        let exact = output(&forward, &x);
        let of_rounded = output(&forward, &x_rounded);
        let n = exact.len();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let what = &forward.name;
        assert_eq!(
            bits(&output(&stored(bf16, f32s), &x_slots)),
            bits(&of_rounded),
            "{what}"
        );
        let y = output(&stored(bf16, bf16), &x_slots);
        assert_eq!(
            bits(&from_bf16(&y, n)),
            bits(&to_bf16(&of_rounded).1),
            "{what}"
        );
        let y = output(&stored(f32s, bf16), &x);
        assert_eq!(bits(&from_bf16(&y, n)), bits(&to_bf16(&exact).1), "{what}");

        let backward = Window {
            pass: Pass::BackwardData,
            storage: WindowStorage { x: bf16, y: f32s },
            ..forward.clone()
        };
        if kind == PoolKind::Avg {
            let refused = jit.compile_window(&backward);
            assert!(
                matches!(refused, Err(CodegenError::Malformed { .. })),
                "{what}"
            );
            continue;
        }
        let dy = data(n, 100 + i as u64, -1.0, 1.0);
        let mut gradient = |window: &Window, x: &[f32]| {
            let inputs = [(Role::Input, x), (Role::OutputGrad, &dy[..])];
            run(&mut jit, window, &inputs)
                .remove(&Role::InputGrad)
                .expect("dx")
        };
        let f32_backward = Window {
            storage: WindowStorage::F32,
            ..backward.clone()
        };
        let expected = gradient(&f32_backward, &x_rounded);
        assert_eq!(
            bits(&gradient(&backward, &x_slots)),
            bits(&expected),
            "{what}"
        );
    }
    for kind in every_kernel() {
        let bf16_x = Window {
            storage: WindowStorage { x: bf16, y: f32s },
            ..kind.clone()
        };
        let pooling = matches!(kind.kind, WindowKind::Pool { .. });
        if !pooling {
            let refused = jit.compile_window(&bf16_x);
            assert!(
                matches!(refused, Err(CodegenError::Malformed { .. })),
                "{}",
                kind.name
            );
        }
    }
}

#[test]
fn pooling_gradients_match_the_vector_jacobian_product() {
    let mut jit = Jit::new().expect("jit");
    for (i, case) in fitting_pool_configs() {
        let PoolCase {
            kind,
            size,
            stride,
            padding,
            shape,
        } = case;
        let window = pool(kind, size, stride, padding, Pass::BackwardData, shape);
        let x = distinct(shape.iter().product(), i as u64, 0.01);
        let dy = data(
            window.output_shape().expect("valid").iter().product(),
            1000 + i as u64,
            -1.0,
            1.0,
        );
        let out = run(
            &mut jit,
            &window,
            &[(Role::Input, &x), (Role::OutputGrad, &dy)],
        );
        let expected = pool_vjp(&x, &dy, shape, kind, size, stride, padding);
        assert_close(&window.name, &out[&Role::InputGrad], &expected);
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    let mut jit = Jit::new().expect("jit");
    let shape = [2, 5, 7, 3];
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (size, stride, padding) in [
            ([3, 3], [2, 2], Padding::Same),
            ([2, 3], [1, 2], Padding::Valid),
            ([3, 2], [1, 1], Padding::Same),
            ([3, 3], [2, 2], explicit([1, 2, 0, 1], true)),
        ] {
            let window = pool(kind, size, stride, padding, Pass::BackwardData, shape);
            let x = distinct(shape.iter().product(), 7, 0.01);
            let dy = data(
                window.output_shape().expect("valid").iter().product(),
                8,
                -1.0,
                1.0,
            );
            let forward = |x: &[f32]| {
                flat(&reference::pool2d(
                    &array(&shape, x),
                    kind,
                    size.map(|s| s as u64),
                    stride.map(|s| s as u64),
                    padding,
                ))
            };
            let numeric = finite_differences(&x, &dy, 2e-3, forward);
            assert_near(
                &window.name,
                &pool_vjp(&x, &dy, shape, kind, size, stride, padding),
                &numeric,
            );
            let out = run(
                &mut jit,
                &window,
                &[(Role::Input, &x), (Role::OutputGrad, &dy)],
            );
            assert_near(&window.name, &widen(&out[&Role::InputGrad]), &numeric);
        }
    }
}

#[test]
fn max_pooling_gradient_goes_to_the_first_maximum() {
    // One 2x2 window of four equal values, and a window whose maximum
    // repeats in its second row: the first in row-major order wins.
    let mut jit = Jit::new().expect("jit");
    let x = [1.0, 1.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0];
    let window = pool(
        PoolKind::Max,
        [2, 2],
        [2, 2],
        Padding::Valid,
        Pass::BackwardData,
        [1, 2, 4, 1],
    );
    let out = run(
        &mut jit,
        &window,
        &[(Role::Input, &x), (Role::OutputGrad, &[5.0, 7.0])],
    );
    assert_eq!(
        out[&Role::InputGrad],
        [5.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn global_pooling_matches_the_reference_and_its_gradient() {
    let mut jit = Jit::new().expect("jit");
    let shapes = [
        [1, 5, 7, 1],
        [1, 5, 7, 3],
        [7, 5, 7, 13],
        [2, 3, 3, 16],
        [3, 2, 5, 37],
        [1, 1, 1, 6],
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let x = distinct(shape.iter().product(), i as u64, 0.01);
            let forward = Window {
                name: format!("global {kind:?} {shape:?}"),
                kind: WindowKind::GlobalPool { kind },
                pass: Pass::Forward,
                input: shape,
                storage: Default::default(),
            };
            let out = run(&mut jit, &forward, &[(Role::Input, &x)]);
            let expected = reference::global_pool(&array(&shape, &x), kind);
            assert_eq!(forward.output_shape().expect("valid"), expected.shape());
            assert_close(&forward.name, &out[&Role::Output], &widen(&flat(&expected)));

            let backward = Window {
                pass: Pass::BackwardData,
                ..forward
            };
            let dy = data(shape[0] * shape[3], 50 + i as u64, -1.0, 1.0);
            let out = run(
                &mut jit,
                &backward,
                &[(Role::Input, &x), (Role::OutputGrad, &dy)],
            );
            let expected = global_vjp(&x, &dy, shape, kind);
            assert_close(&backward.name, &out[&Role::InputGrad], &expected);
            if shape == [1, 5, 7, 3] {
                let numeric = finite_differences(&x, &dy, 2e-3, |x| {
                    flat(&reference::global_pool(&array(&shape, x), kind))
                });
                assert_near(&backward.name, &expected, &numeric);
            }
        }
    }
}

#[test]
fn depth_max_pooling_matches_the_reference_and_its_gradient() {
    let mut jit = Jit::new().expect("jit");
    for (i, (shape, size)) in [
        ([1, 5, 7, 6], 2),
        ([1, 5, 7, 6], 3),
        ([7, 5, 7, 12], 4),
        ([1, 3, 5, 13], 13),
        ([2, 5, 7, 3], 1),
    ]
    .into_iter()
    .enumerate()
    {
        let x = distinct(shape.iter().product(), i as u64, 0.01);
        let forward = Window {
            name: format!("depth max {size} {shape:?}"),
            kind: WindowKind::DepthMaxPool { size },
            pass: Pass::Forward,
            input: shape,
            storage: Default::default(),
        };
        let out = run(&mut jit, &forward, &[(Role::Input, &x)]);
        let expected = reference::depth_max_pool(&array(&shape, &x), size);
        assert_eq!(forward.output_shape().expect("valid"), expected.shape());
        assert_close(&forward.name, &out[&Role::Output], &widen(&flat(&expected)));

        let backward = Window {
            pass: Pass::BackwardData,
            ..forward
        };
        let dy = data(expected.len(), 70 + i as u64, -1.0, 1.0);
        let out = run(
            &mut jit,
            &backward,
            &[(Role::Input, &x), (Role::OutputGrad, &dy)],
        );
        let expected = depth_vjp(&x, &dy, shape, size);
        assert_close(&backward.name, &out[&Role::InputGrad], &expected);
        if i < 2 {
            let numeric = finite_differences(&x, &dy, 2e-3, |x| {
                flat(&reference::depth_max_pool(&array(&shape, x), size))
            });
            assert_near(&backward.name, &expected, &numeric);
        }
    }
}

// ---------------------------------------------------------------------------
// Tied maxima, as TensorFlow.

/// The bits of `actual` and `expected` are the same (so `-0.0` is not `0.0`).
#[track_caller]
fn assert_bits(what: &str, actual: &[f32], expected: &[f32]) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(actual),
        bits(expected),
        "{what}:\n got {actual:?}\n expected {expected:?}"
    );
}

/// Runs a max pooling kernel forward and backward on a recorded case and
/// asserts TensorFlow's output and input gradient bit for bit.
fn assert_like_tensorflow(jit: &mut Jit, kind: WindowKind, case: &tf_ties::Case) {
    let forward = Window {
        name: format!("{} {kind:?}", case.name),
        kind,
        pass: Pass::Forward,
        input: case.shape,
        storage: Default::default(),
    };
    let out = run(jit, &forward, &[(Role::Input, case.x)]);
    assert_bits(&forward.name, &out[&Role::Output], case.y);
    let backward = Window {
        pass: Pass::BackwardData,
        ..forward
    };
    let inputs = [(Role::Input, case.x), (Role::OutputGrad, case.dy)];
    let out = run(jit, &backward, &inputs);
    assert_bits(&backward.name, &out[&Role::InputGrad], case.dx);
}

#[test]
fn global_max_pooling_splits_tied_gradients_as_tensorflow_does() {
    let mut jit = Jit::new().expect("jit");
    let kind = WindowKind::GlobalPool {
        kind: PoolKind::Max,
    };
    for case in tf_ties::GLOBAL_MAX_POOL {
        assert_like_tensorflow(&mut jit, kind.clone(), case);
    }
}

#[test]
fn depth_max_pooling_splits_tied_gradients_as_tensorflow_does() {
    let mut jit = Jit::new().expect("jit");
    for (size, case) in tf_ties::DEPTH_MAX_POOL {
        assert_like_tensorflow(&mut jit, WindowKind::DepthMaxPool { size: *size }, case);
    }
}

#[test]
fn max_pooling_sends_tied_gradients_to_the_first_as_tensorflow_does() {
    let mut jit = Jit::new().expect("jit");
    for (size, stride, padding, case) in tf_ties::MAX_POOL {
        let kind = WindowKind::Pool {
            kind: PoolKind::Max,
            size: [*size; 2],
            stride: [*stride; 2],
            padding: *padding,
        };
        assert_like_tensorflow(&mut jit, kind, case);
    }
}

/// Values as after a ReLU, in steps of 1/4 up to 1: about half zeros and
/// many ties among the rest.
fn relu_zeroed(n: usize, seed: u64) -> Vec<f32> {
    data(n, seed, -1.0, 1.0)
        .into_iter()
        .map(|v| (v * 4.0).round().max(0.0) / 4.0)
        .collect()
}

#[test]
fn tied_global_and_depth_maxima_share_the_gradient_on_every_lane_layout() {
    // Channels that fill vectors and scalar tails, several chunks of 16,
    // and feature maps of one pixel.
    let mut jit = Jit::new().expect("jit");
    for (i, shape) in [[7, 5, 7, 13], [2, 3, 3, 16], [3, 2, 5, 37], [1, 1, 1, 6]]
        .into_iter()
        .enumerate()
    {
        let x = relu_zeroed(shape.iter().product(), 300 + i as u64);
        let global = Window {
            name: format!("global max {shape:?}"),
            kind: WindowKind::GlobalPool {
                kind: PoolKind::Max,
            },
            pass: Pass::BackwardData,
            input: shape,
            storage: Default::default(),
        };
        let dy = data(shape[0] * shape[3], 400 + i as u64, -1.0, 1.0);
        let out = run(
            &mut jit,
            &global,
            &[(Role::Input, &x), (Role::OutputGrad, &dy)],
        );
        let expected = global_vjp(&x, &dy, shape, PoolKind::Max);
        assert_close(&global.name, &out[&Role::InputGrad], &expected);
        for size in [2, 3, 4, 13, 37]
            .into_iter()
            .filter(|size| shape[3] % size == 0)
        {
            let depth = Window {
                name: format!("depth max {size} {shape:?}"),
                kind: WindowKind::DepthMaxPool { size },
                ..global.clone()
            };
            let dy = data(x.len() / size, 500 + i as u64, -1.0, 1.0);
            let out = run(
                &mut jit,
                &depth,
                &[(Role::Input, &x), (Role::OutputGrad, &dy)],
            );
            let expected = depth_vjp(&x, &dy, shape, size);
            assert_close(&depth.name, &out[&Role::InputGrad], &expected);
        }
    }
}

// ---------------------------------------------------------------------------
// LRN.

/// `(depth_radius, bias, alpha, beta)`: AlexNet's, square roots, a general
/// exponent, a radius past the last channel, a strong alpha.
const LRN_CASES: [(usize, f64, f64, f64); 6] = [
    (2, 2.0, 1e-4, 0.75),
    (5, 1.0, 1e-3, 0.75),
    (1, 1.0, 0.1, 0.5),
    (2, 0.5, 0.3, 0.3),
    (40, 1.5, 0.05, 1.0),
    (3, 1.0, 2.0, 1.7),
];

fn lrn(case: (usize, f64, f64, f64), pass: Pass, input: [usize; 4]) -> Window {
    let (depth_radius, bias, alpha, beta) = case;
    Window {
        name: format!("lrn {case:?} {pass:?} {input:?}"),
        kind: WindowKind::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        },
        pass,
        input,
        storage: Default::default(),
    }
}

#[test]
fn lrn_matches_the_reference() {
    let mut jit = Jit::new().expect("jit");
    for (i, case) in LRN_CASES.into_iter().enumerate() {
        for (j, shape) in SHAPES.into_iter().enumerate() {
            let window = lrn(case, Pass::Forward, shape);
            // Large inputs drive the denominator over a wide range (to ~1e4
            // with alpha 2), where a general beta needs accurate ln and exp.
            let x = data(shape.iter().product(), (10 * i + j) as u64, -60.0, 60.0);
            let out = run(&mut jit, &window, &[(Role::Input, &x)]);
            let (r, bias, alpha, beta) = case;
            let expected = reference::lrn(&array(&shape, &x), r, bias, alpha, beta);
            assert_close(&window.name, &out[&Role::Output], &widen(&flat(&expected)));
        }
    }
}

#[test]
fn lrn_gradient_matches_the_vector_jacobian_product() {
    let mut jit = Jit::new().expect("jit");
    for (i, case) in LRN_CASES.into_iter().enumerate() {
        for (j, shape) in SHAPES.into_iter().enumerate() {
            let window = lrn(case, Pass::BackwardData, shape);
            let x = data(shape.iter().product(), (10 * i + j) as u64, -3.0, 3.0);
            let dy = data(x.len(), (100 + 10 * i + j) as u64, -1.0, 1.0);
            let out = run(
                &mut jit,
                &window,
                &[(Role::Input, &x), (Role::OutputGrad, &dy)],
            );
            let (r, bias, alpha, beta) = case;
            let expected = lrn_vjp(&x, &dy, shape[3], r, bias, alpha, beta);
            assert_close(&window.name, &out[&Role::InputGrad], &expected);
        }
    }
}

#[test]
fn lrn_vector_jacobian_product_matches_finite_differences() {
    let shape = [2, 1, 3, 13];
    for (i, case) in LRN_CASES.into_iter().enumerate() {
        let x = data(shape.iter().product(), 30 + i as u64, -3.0, 3.0);
        let dy = data(x.len(), 40 + i as u64, -1.0, 1.0);
        let (r, bias, alpha, beta) = case;
        let numeric = finite_differences(&x, &dy, 1e-2, |x| {
            flat(&reference::lrn(&array(&shape, x), r, bias, alpha, beta))
        });
        assert_near(
            &format!("lrn {case:?}"),
            &lrn_vjp(&x, &dy, shape[3], r, bias, alpha, beta),
            &numeric,
        );
    }
}

// ---------------------------------------------------------------------------
// Depthwise convolution.

#[test]
fn depthwise_forward_matches_the_reference() {
    let mut jit = Jit::new().expect("jit");
    for (i, (conv, shape)) in conv_configs().into_iter().enumerate() {
        let window = conv.window(Pass::Forward, shape);
        if !fits(shape, conv.kernel, conv.stride, conv.dilation, conv.padding) {
            assert!(
                matches!(
                    jit.compile_window(&window),
                    Err(CodegenError::Malformed { .. })
                ),
                "{}",
                window.name
            );
            continue;
        }
        let x = data(shape.iter().product(), i as u64, -1.0, 1.0);
        let filter = data(conv.filter_len(shape[3]), 500 + i as u64, -1.0, 1.0);
        let bias = data(shape[3] * conv.multiplier, 900 + i as u64, -1.0, 1.0);
        let mut inputs = vec![
            (Role::Input, x.as_slice()),
            (Role::Filter, filter.as_slice()),
        ];
        if conv.bias {
            inputs.push((Role::Bias, &bias));
        }
        let out = run(&mut jit, &window, &inputs);
        let expected = conv.forward(&x, shape, &filter, conv.bias.then_some(bias.as_slice()));
        assert_close(&window.name, &out[&Role::Output], &widen(&expected));
    }
}

#[test]
fn depthwise_gradients_match_the_vector_jacobian_products() {
    let mut jit = Jit::new().expect("jit");
    for (i, (conv, shape)) in conv_configs().into_iter().enumerate() {
        if !fits(shape, conv.kernel, conv.stride, conv.dilation, conv.padding) {
            continue;
        }
        let x = data(shape.iter().product(), i as u64, -1.0, 1.0);
        let filter = data(conv.filter_len(shape[3]), 500 + i as u64, -1.0, 1.0);
        let [oh, ow] = conv.output(shape);
        let dy = data(
            shape[0] * oh * ow * shape[3] * conv.multiplier,
            700 + i as u64,
            -1.0,
            1.0,
        );

        let data_pass = conv.window(Pass::BackwardData, shape);
        let out = run(
            &mut jit,
            &data_pass,
            &[(Role::OutputGrad, &dy), (Role::Filter, &filter)],
        );
        assert_close(
            &data_pass.name,
            &out[&Role::InputGrad],
            &conv.data_vjp(&dy, shape, &filter),
        );

        let filter_pass = conv.window(Pass::BackwardFilter, shape);
        let out = run(
            &mut jit,
            &filter_pass,
            &[(Role::Input, &x), (Role::OutputGrad, &dy)],
        );
        let (dfilter, dbias) = conv.filter_vjp(&x, &dy, shape);
        assert_close(&filter_pass.name, &out[&Role::FilterGrad], &dfilter);
        if conv.bias {
            assert_close(&filter_pass.name, &out[&Role::BiasGrad], &dbias);
        } else {
            assert!(!out.contains_key(&Role::BiasGrad));
        }
    }
}

#[test]
fn depthwise_vector_jacobian_products_match_finite_differences() {
    let shape = [2, 5, 7, 3];
    let configs = [
        Conv {
            multiplier: 2,
            kernel: [3, 3],
            stride: [2, 1],
            dilation: [1, 2],
            padding: Padding::Same,
            bias: true,
        },
        Conv {
            multiplier: 1,
            kernel: [2, 3],
            stride: [1, 1],
            dilation: [2, 1],
            padding: Padding::Valid,
            bias: true,
        },
    ];
    for (i, conv) in configs.into_iter().enumerate() {
        let x = data(shape.iter().product(), 60 + i as u64, -1.0, 1.0);
        let filter = data(conv.filter_len(shape[3]), 61 + i as u64, -1.0, 1.0);
        let bias = data(shape[3] * conv.multiplier, 62 + i as u64, -1.0, 1.0);
        let [oh, ow] = conv.output(shape);
        let dy = data(
            shape[0] * oh * ow * shape[3] * conv.multiplier,
            63 + i as u64,
            -1.0,
            1.0,
        );
        let what = format!("{conv:?}");
        let numeric = finite_differences(&x, &dy, 1e-2, |x| {
            conv.forward(x, shape, &filter, Some(&bias))
        });
        assert_near(&what, &conv.data_vjp(&dy, shape, &filter), &numeric);
        let numeric = finite_differences(&filter, &dy, 1e-2, |f| {
            conv.forward(&x, shape, f, Some(&bias))
        });
        let (dfilter, dbias) = conv.filter_vjp(&x, &dy, shape);
        assert_near(&what, &dfilter, &numeric);
        let numeric = finite_differences(&bias, &dy, 1e-2, |b| {
            conv.forward(&x, shape, &filter, Some(b))
        });
        assert_near(&what, &dbias, &numeric);
    }
}

// ---------------------------------------------------------------------------
// Determinism, buffers and errors.

/// One kernel of every kind and pass, with domains of at least 3 items.
fn every_kernel() -> Vec<Window> {
    let shape = [7, 5, 7, 13];
    let conv = |multiplier, pass| {
        Conv {
            multiplier,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Same,
            bias: true,
        }
        .window(pass, shape)
    };
    let simple = |kind: WindowKind, pass| Window {
        name: format!("{kind:?} {pass:?}"),
        kind,
        pass,
        input: shape,
        storage: Default::default(),
    };
    let mut kernels = Vec::new();
    for pass in [Pass::Forward, Pass::BackwardData] {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            kernels.push(pool(kind, [3, 3], [2, 1], Padding::Same, pass, shape));
            let ceil = explicit([2, 1, 0, 2], true);
            kernels.push(pool(kind, [3, 3], [2, 2], ceil, pass, shape));
            kernels.push(simple(WindowKind::GlobalPool { kind }, pass));
        }
        kernels.push(simple(WindowKind::DepthMaxPool { size: 13 }, pass));
        kernels.push(lrn(LRN_CASES[3], pass, shape));
    }
    for pass in [Pass::Forward, Pass::BackwardData, Pass::BackwardFilter] {
        kernels.push(conv(1, pass));
        kernels.push(conv(3, pass));
    }
    kernels
}

#[test]
fn any_split_of_the_domain_gives_bitwise_the_same_result() {
    let mut jit = Jit::new().expect("jit");
    // Distinct values, and values with many tied maxima (which the global
    // and depth max pooling gradients count and share).
    let generators: [fn(usize, u64) -> Vec<f32>; 2] =
        [|n, seed| distinct(n, seed, 1e-3), relu_zeroed];
    let kernels = every_kernel();
    for (i, (window, generate)) in kernels
        .iter()
        .flat_map(|w| generators.iter().map(move |g| (w.clone(), g)))
        .enumerate()
    {
        let buffers = window.buffers().expect("valid");
        let inputs: Vec<(Role, Vec<f32>)> = buffers
            .iter()
            .filter(|b| !b.role.is_written())
            .enumerate()
            .map(|(j, b)| {
                (
                    b.role,
                    generate(b.shape.iter().product(), (10 * i + j) as u64),
                )
            })
            .collect();
        let inputs: Vec<(Role, &[f32])> = inputs
            .iter()
            .map(|(role, v)| (*role, v.as_slice()))
            .collect();
        let domain = window.domain().expect("valid");
        assert!(domain >= 3, "{}: domain {domain}", window.name);
        let whole = run_split(&mut jit, &window, &inputs, &[], f32::NAN);
        let cuts = [1, domain / 2 + 1];
        let split = run_split(&mut jit, &window, &inputs, &cuts, 7.0);
        for (role, values) in &whole {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                values.iter().all(|v| v.is_finite()),
                "{}: {role:?} not all written",
                window.name
            );
            assert_eq!(
                bits(values),
                bits(&split[role]),
                "{}: {role:?}",
                window.name
            );
        }
    }
}

#[test]
fn buffers_domains_and_shapes_are_as_documented() {
    let shape = [7, 5, 6, 13];
    let max_back = pool(
        PoolKind::Max,
        [2, 2],
        [2, 2],
        Padding::Valid,
        Pass::BackwardData,
        shape,
    );
    let roles = |w: &Window| {
        w.buffers()
            .expect("valid")
            .iter()
            .map(|b: &Buffer| b.role)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        roles(&max_back),
        [Role::Input, Role::OutputGrad, Role::InputGrad]
    );
    assert_eq!(max_back.domain().expect("valid"), 7 * 5);
    assert_eq!(max_back.output_shape().expect("valid"), [7, 2, 3, 13]);
    let avg_back = pool(
        PoolKind::Avg,
        [2, 2],
        [2, 2],
        Padding::Same,
        Pass::BackwardData,
        shape,
    );
    assert_eq!(roles(&avg_back), [Role::OutputGrad, Role::InputGrad]);
    let avg = Window {
        pass: Pass::Forward,
        ..avg_back
    };
    assert_eq!(avg.domain().expect("valid"), 7 * 3);
    assert_eq!(avg.output_shape().expect("valid"), [7, 3, 3, 13]);

    let global = Window {
        name: "g".into(),
        kind: WindowKind::GlobalPool {
            kind: PoolKind::Max,
        },
        pass: Pass::Forward,
        input: [7, 5, 6, 40],
        storage: Default::default(),
    };
    assert_eq!(global.domain().expect("valid"), 7 * 3);
    assert_eq!(global.output_shape().expect("valid"), [7, 40]);

    let conv = Conv {
        multiplier: 3,
        kernel: [3, 2],
        stride: [2, 2],
        dilation: [1, 1],
        padding: Padding::Same,
        bias: true,
    };
    let filter_pass = conv.window(Pass::BackwardFilter, shape);
    let buffers = filter_pass.buffers().expect("valid");
    assert_eq!(
        buffers.iter().map(|b| b.role).collect::<Vec<_>>(),
        [
            Role::Input,
            Role::OutputGrad,
            Role::FilterGrad,
            Role::BiasGrad
        ]
    );
    assert_eq!(buffers[2].shape, [3, 2, 13, 3]);
    assert_eq!(buffers[3].shape, [39]);
    // Blocks of lcm(4, 3) = 12 output channels: three, and one of 3.
    assert_eq!(filter_pass.domain().expect("valid"), 4);
    let forward = conv.window(Pass::Forward, shape);
    assert_eq!(
        roles(&forward),
        [Role::Input, Role::Filter, Role::Bias, Role::Output]
    );
    assert_eq!(forward.output_shape().expect("valid"), [7, 3, 3, 39]);
    assert_eq!(forward.domain().expect("valid"), 7 * 3);
    assert_eq!(
        conv.window(Pass::BackwardData, shape)
            .domain()
            .expect("valid"),
        7 * 5
    );
    let no_bias = Conv {
        bias: false,
        ..conv
    };
    assert_eq!(
        roles(&no_bias.window(Pass::BackwardData, shape)),
        [Role::OutputGrad, Role::Filter, Role::InputGrad]
    );
}

#[test]
fn malformed_descriptions_are_errors() {
    let mut jit = Jit::new().expect("jit");
    let shape = [1, 5, 7, 6];
    let cases = [
        (
            pool(
                PoolKind::Max,
                [2, 2],
                [2, 2],
                Padding::Same,
                Pass::Forward,
                [1, 0, 7, 6],
            ),
            "height is zero",
        ),
        (
            pool(
                PoolKind::Max,
                [0, 2],
                [2, 2],
                Padding::Same,
                Pass::Forward,
                shape,
            ),
            "window is zero",
        ),
        (
            pool(
                PoolKind::Avg,
                [2, 2],
                [2, 0],
                Padding::Same,
                Pass::Forward,
                shape,
            ),
            "stride is zero",
        ),
        (
            pool(
                PoolKind::Max,
                [6, 2],
                [1, 1],
                Padding::Valid,
                Pass::Forward,
                shape,
            ),
            "does not fit",
        ),
        (
            pool(
                PoolKind::Max,
                [2, 2],
                [1, 1],
                Padding::Valid,
                Pass::BackwardFilter,
                shape,
            ),
            "no filter",
        ),
        (
            Window {
                name: "d".into(),
                kind: WindowKind::DepthMaxPool { size: 4 },
                pass: Pass::Forward,
                input: shape,
                storage: Default::default(),
            },
            "groups of 4",
        ),
        (
            Window {
                name: "d".into(),
                kind: WindowKind::DepthMaxPool { size: 0 },
                pass: Pass::Forward,
                input: shape,
                storage: Default::default(),
            },
            "groups of 0",
        ),
        (
            lrn((2, f64::NAN, 1e-4, 0.75), Pass::Forward, shape),
            "finite",
        ),
        (
            lrn((2, 2.0, 1e-4, 0.75), Pass::BackwardData, [1, 1, 1, 20000]),
            "at most 16384",
        ),
        (
            Conv {
                multiplier: 0,
                kernel: [3, 3],
                stride: [1, 1],
                dilation: [1, 1],
                padding: Padding::Same,
                bias: false,
            }
            .window(Pass::Forward, shape),
            "multiplier is zero",
        ),
        (
            Conv {
                multiplier: 1,
                kernel: [3, 3],
                stride: [1, 1],
                dilation: [3, 1],
                padding: Padding::Valid,
                bias: false,
            }
            .window(Pass::Forward, shape),
            "does not fit",
        ),
        (
            pool(
                PoolKind::Avg,
                [2, 2],
                [2, 2],
                Padding::Same,
                Pass::Forward,
                [1, 1 << 20, 1 << 20, 6],
            ),
            "too large",
        ),
        (
            pool(
                PoolKind::Avg,
                [2, 2],
                [usize::MAX, 2],
                Padding::Same,
                Pass::Forward,
                shape,
            ),
            "too large",
        ),
    ];
    for (window, message) in cases {
        match jit.compile_window(&window) {
            Err(CodegenError::Malformed { message: m, .. }) => assert!(
                m.contains(message),
                "{}: `{m}` lacks `{message}`",
                window.name
            ),
            Err(e) => panic!("{}: unexpected error {e}", window.name),
            Ok(_) => panic!("{}: compiled", window.name),
        }
        assert!(
            window.validate().is_err() && window.domain().is_err() && window.buffers().is_err()
        );
    }
}
