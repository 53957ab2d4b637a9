//! Tests of the reference implementation in `support/reference.rs` against
//! small cases worked out by hand (in the comments) and, where marked
//! "from TensorFlow", against numbers printed by TensorFlow 2.21 / Keras 3.15
//! (`tf.nn.conv2d`, `tf.nn.depthwise_conv2d`, `tf.nn.local_response_normalization`,
//! `keras.layers.BatchNormalization`, `keras.losses.*`). The hand-computed
//! convolution, pooling, LRN, batch-norm, activation, softmax and loss cases
//! were also run through TensorFlow / Keras and agree to the digits shown.
//!
//! The generated inputs of the TensorFlow cases come from [`ramp`], which the
//! Python side computed with the same formula.

#[path = "support/reference.rs"]
mod reference;

// Recorded by `tests/tf/ties.py`; generated, so rustfmt leaves it as written.
#[rustfmt::skip]
#[path = "tf/ties.rs"]
mod tf_ties;

use cnnc::graph::{Activation, Interpolation, Op, Padding, PoolKind};
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use reference::forward;

const TOLERANCE: f64 = 1e-5;

/// A tensor of shape `shape` from row-major values.
fn t(shape: &[usize], values: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches the values")
}

/// Deterministic test values, multiples of 1/8 in [-1, 1]: value `i` is
/// `((i * 37 + seed * 11) % 17 - 8) / 8`. The TensorFlow script used the same.
fn ramp(shape: &[usize], seed: usize) -> ArrayD<f32> {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|i| (((i * 37 + seed * 11) % 17) as f32 - 8.0) / 8.0)
        .collect();
    t(shape, &values)
}

/// Asserts shape and values, within 1e-5 (relative above magnitude 1).
/// The expected values are f64, as precise as they were worked out.
#[track_caller]
fn assert_close(actual: &ArrayD<f32>, shape: &[usize], expected: &[f64]) {
    assert_eq!(actual.shape(), shape, "shape");
    assert_eq!(actual.len(), expected.len(), "number of expected values");
    let got: Vec<f32> = actual.iter().copied().collect();
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(g) - e).abs() <= TOLERANCE * e.abs().max(1.0),
            "value {i}: got {g}, expected {e}\n got: {got:?}\n expected: {expected:?}"
        );
    }
}

#[track_caller]
fn assert_close_scalar(got: f32, expected: f64) {
    assert!(
        (f64::from(got) - expected).abs() <= TOLERANCE * expected.abs().max(1.0),
        "got {got}, expected {expected}"
    );
}

fn conv(filters: u64, kernel: u64, stride: u64, padding: Padding, dilation: u64, bias: bool) -> Op {
    Op::Conv2d {
        filters,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding,
        dilation: [dilation, dilation],
        bias,
        groups: 1,
    }
}

fn pool(kind: PoolKind, size: u64, stride: u64, padding: Padding) -> Op {
    Op::Pool2d {
        kind,
        size: [size, size],
        stride: [stride, stride],
        padding,
    }
}

/// The 4x4 image 1..16, row-major:
///
/// ```text
///  1  2  3  4
///  5  6  7  8
///  9 10 11 12
/// 13 14 15 16
/// ```
fn image_1_to_16() -> ArrayD<f32> {
    let values: Vec<f32> = (1..=16).map(|v| v as f32).collect();
    t(&[1, 4, 4, 1], &values)
}

/// A 3x3 kernel with 1 at (0, 1) and 10 at (1, 2): asymmetric in both axes,
/// so a flipped kernel (true convolution) or a transposed one gives other numbers.
fn asymmetric_kernel() -> ArrayD<f32> {
    t(&[3, 3, 1, 1], &[0., 1., 0., 0., 0., 10., 0., 0., 0.])
}

// ---------------------------------------------------------------------------
// Convolutions.

#[test]
fn conv_valid_is_cross_correlation() {
    // out[y][x] = sum k[ky][kx] * img[y + ky][x + kx] = img[y][x+1] + 10 img[y+1][x+2]:
    // (0,0): 2 + 10*7 = 72     (0,1): 3 + 10*8 = 83
    // (1,0): 6 + 10*11 = 116   (1,1): 7 + 10*12 = 127
    // plus the bias 0.5.
    let out = forward(
        &conv(1, 3, 1, Padding::Valid, 1, true),
        &[&image_1_to_16()],
        &[&asymmetric_kernel(), &t(&[1], &[0.5])],
        false,
    );
    assert_close(&out, &[1, 2, 2, 1], &[72.5, 83.5, 116.5, 127.5]);
}

#[test]
fn conv_same_pads_with_zeros() {
    // Same padding, stride 1, 3x3: one zero row/column on each side, so
    // out[y][x] = img[y-1][x] + 10 img[y][x+1], zero outside:
    // row 0: 0+20, 0+30, 0+40, 0+0
    // row 1: 1+60, 2+70, 3+80, 4+0
    // row 2: 5+100, 6+110, 7+120, 8+0
    // row 3: 9+140, 10+150, 11+160, 12+0
    let out = forward(
        &conv(1, 3, 1, Padding::Same, 1, false),
        &[&image_1_to_16()],
        &[&asymmetric_kernel()],
        false,
    );
    #[rustfmt::skip]
    let expected = [
        20., 30., 40., 0.,
        61., 72., 83., 4.,
        105., 116., 127., 8.,
        149., 160., 171., 12.,
    ];
    assert_close(&out, &[1, 4, 4, 1], &expected);
}

#[test]
fn conv_stride_2_same_puts_the_odd_padding_bottom_right() {
    // 4x4 input, 3x3 kernel of ones, stride 2, same: output 2x2, total padding
    // (2 - 1) * 2 + 3 - 4 = 1 per axis, all of it after (TensorFlow's rule),
    // so the windows cover rows/columns {0,1,2} and {2,3,(pad)}:
    // (0,0): 1+2+3+5+6+7+9+10+11 = 54      (0,1): 3+4+7+8+11+12 = 45
    // (1,0): 9+10+11+13+14+15 = 72         (1,1): 11+12+15+16 = 54
    // (Padding before instead would give 14 at (0,0).)
    let ones = t(&[3, 3, 1, 1], &[1.0; 9]);
    let out = forward(
        &conv(1, 3, 2, Padding::Same, 1, false),
        &[&image_1_to_16()],
        &[&ones],
        false,
    );
    assert_close(&out, &[1, 2, 2, 1], &[54., 45., 72., 54.]);
}

#[test]
fn conv_dilation_2_spreads_the_taps() {
    // 5x5 input img[r][c] = 5r + c + 1, 2x2 kernel [[1, 2], [3, 4]] dilated by
    // 2 (effective 3x3), valid: 3x3 output,
    // out[y][x] = img[y][x] + 2 img[y][x+2] + 3 img[y+2][x] + 4 img[y+2][x+2]
    //           = 10 (5y + x) + (1 + 2*3 + 3*11 + 4*13) = 50y + 10x + 92.
    let values: Vec<f32> = (1..=25).map(|v| v as f32).collect();
    let x = t(&[1, 5, 5, 1], &values);
    let k = t(&[2, 2, 1, 1], &[1., 2., 3., 4.]);
    let out = forward(
        &conv(1, 2, 1, Padding::Valid, 2, false),
        &[&x],
        &[&k],
        false,
    );
    assert_close(
        &out,
        &[1, 3, 3, 1],
        &[92., 102., 112., 142., 152., 162., 192., 202., 212.],
    );
}

#[test]
fn conv_kernel_layout_is_kh_kw_in_out() {
    // A 1x1 conv is a matrix product per pixel: kernel[0, 0] is [in=2, out=3]
    // = [[1, 0, -1], [10, 100, 1]]. Pixel [1, 2] -> [1 + 20, 0 + 200, -1 + 2];
    // pixel [-1, 0.5] -> [-1 + 5, 50, 1 + 0.5]. Batch of two pixels-images.
    let x = t(&[2, 1, 1, 2], &[1., 2., -1., 0.5]);
    let k = t(&[1, 1, 2, 3], &[1., 0., -1., 10., 100., 1.]);
    let out = forward(
        &conv(3, 1, 1, Padding::Valid, 1, false),
        &[&x],
        &[&k],
        false,
    );
    assert_close(&out, &[2, 1, 1, 3], &[21., 200., 1., 4., 50., 1.5]);
}

#[test]
fn conv_stride_2_same_matches_tensorflow() {
    // From TensorFlow: tf.nn.conv2d(ramp([1,5,4,2], 1), ramp([3,3,2,3], 2),
    // strides 2, SAME) + ramp([3], 3). Height pads (1, 1), width (0, 1).
    let x = ramp(&[1, 5, 4, 2], 1);
    let k = ramp(&[3, 3, 2, 3], 2);
    let b = ramp(&[3], 3);
    let out = forward(
        &conv(3, 3, 2, Padding::Same, 1, true),
        &[&x],
        &[&k, &b],
        false,
    );
    #[rustfmt::skip]
    let expected = [
        0.328125, -1.515625, -0.4375, -0.40625, -1.5, -0.203125,
        3.359375, -0.03125, -1.03125, 1.78125, -0.78125, -2.546875,
        0.234375, -0.953125, -0.8125, 0.953125, -0.765625, -0.625,
    ];
    assert_close(&out, &[1, 3, 2, 3], &expected);
}

#[test]
fn grouped_conv_matches_tensorflow() {
    // From TensorFlow: tf.nn.conv2d(ramp([1,5,4,4], 7), ramp([3,3,2,6], 8),
    // strides 2, SAME) + ramp([6], 9): a kernel of half the input's channels
    // is TensorFlow's (and Keras's `groups=2`) grouped convolution, filters
    // 0..3 reading channels 0..2 and filters 3..6 channels 2..4.
    let x = ramp(&[1, 5, 4, 4], 7);
    let k = ramp(&[3, 3, 2, 6], 8);
    let b = ramp(&[6], 9);
    let op = Op::Conv2d {
        filters: 6,
        kernel: [3, 3],
        stride: [2, 2],
        padding: Padding::Same,
        dilation: [1, 1],
        bias: true,
        groups: 2,
    };
    let out = forward(&op, &[&x], &[&k, &b], false);
    #[rustfmt::skip]
    let expected = [
        0.828125, 1.078125, 0.796875, -1.171875, -0.46875, 2.625,
        2.421875, -1.515625, -2.265625, 0.953125, 0.0625, -0.828125,
        -1.234375, -0.859375, -1.015625, 0.53125, 2.515625, -3.203125,
        1.03125, -0.421875, 1.3125, -2.078125, -0.421875, 3.09375,
        1.03125, -0.59375, -0.625, -1.390625, 0.625, 1.3125,
        0.984375, -1.28125, -1.953125, 0.5625, 1.078125, -1.0625,
    ];
    assert_close(&out, &[1, 3, 2, 6], &expected);
}

#[test]
fn conv_dilation_2_same_matches_tensorflow() {
    // From TensorFlow: tf.nn.conv2d(ramp([1,4,4,2], 4), ramp([2,2,2,2], 5),
    // strides 1, SAME, dilations 2). Effective kernel 3: padding (1, 1).
    let x = ramp(&[1, 4, 4, 2], 4);
    let k = ramp(&[2, 2, 2, 2], 5);
    let out = forward(&conv(2, 2, 1, Padding::Same, 2, false), &[&x], &[&k], false);
    #[rustfmt::skip]
    let expected = [
        0.125, 0.078125, 0.5625, 0.46875, -0.25, -0.8125, -0.6875, -0.171875,
        1.625, 0.203125, -0.640625, -0.03125, -1.171875, -0.703125, 0.28125, -0.28125,
        -0.265625, -0.109375, 2.015625, 1., -1.171875, -0.203125, -0.484375, 0.265625,
        0.25, -0.46875, -0.484375, 0.734375, -0.203125, 0.546875, 0.28125, -0.140625,
    ];
    assert_close(&out, &[1, 4, 4, 2], &expected);
}

#[test]
fn conv_of_a_realistic_size_agrees_with_a_direct_sum() {
    // [7, 28, 28, 16] * [3, 3, 16, 32], same: the size the back-end tests
    // use, checked at one interior and one corner output by a direct sum.
    let x = ramp(&[7, 28, 28, 16], 1);
    let k = ramp(&[3, 3, 16, 32], 2);
    let out = forward(
        &conv(32, 3, 1, Padding::Same, 1, false),
        &[&x],
        &[&k],
        false,
    );
    assert_eq!(out.shape(), &[7, 28, 28, 32]);
    let direct = |b: usize, y: usize, xx: usize, f: usize| {
        let mut acc = 0f64;
        for ky in 0..3 {
            for kx in 0..3 {
                let (iy, ix) = ((y + ky) as isize - 1, (xx + kx) as isize - 1);
                if !(0..28).contains(&iy) || !(0..28).contains(&ix) {
                    continue;
                }
                for c in 0..16 {
                    acc += f64::from(x[[b, iy as usize, ix as usize, c]] * k[[ky, kx, c, f]]);
                }
            }
        }
        acc
    };
    for (b, y, xx, f) in [(3, 13, 7, 5), (6, 0, 27, 31), (0, 27, 0, 0)] {
        assert_close_scalar(out[[b, y, xx, f]], direct(b, y, xx, f));
    }
}

#[test]
fn depthwise_output_channel_is_c_times_multiplier_plus_m() {
    // One pixel with channels [2, 3], 1x1 kernel [c][m] = [[1, 10], [100, 1000]],
    // bias [0.1, 0.2, 0.3, 0.4]: output channel c * 2 + m is x[c] * k[c][m] + bias:
    // [2*1, 2*10, 3*100, 3*1000] + bias. (m-major order would give 2, 300, 20, 3000.)
    let op = Op::DepthwiseConv2d {
        multiplier: 2,
        kernel: [1, 1],
        stride: [1, 1],
        padding: Padding::Valid,
        dilation: [1, 1],
        bias: true,
    };
    let x = t(&[1, 1, 1, 2], &[2., 3.]);
    let k = t(&[1, 1, 2, 2], &[1., 10., 100., 1000.]);
    let b = t(&[4], &[0.1, 0.2, 0.3, 0.4]);
    let out = forward(&op, &[&x], &[&k, &b], false);
    assert_close(&out, &[1, 1, 1, 4], &[2.1, 20.2, 300.3, 3000.4]);
}

#[test]
fn depthwise_stride_2_same_matches_tensorflow() {
    // From TensorFlow: tf.nn.depthwise_conv2d(ramp([1,5,5,2], 6),
    // ramp([3,3,2,2], 7), strides 2, SAME) + ramp([4], 8).
    let op = Op::DepthwiseConv2d {
        multiplier: 2,
        kernel: [3, 3],
        stride: [2, 2],
        padding: Padding::Same,
        dilation: [1, 1],
        bias: true,
    };
    let x = ramp(&[1, 5, 5, 2], 6);
    let k = ramp(&[3, 3, 2, 2], 7);
    let b = ramp(&[4], 8);
    let out = forward(&op, &[&x], &[&k, &b], false);
    #[rustfmt::skip]
    let expected = [
        0.21875, 0.5, 0.1875, -1.359375, -2.6875, -2.3125, 1.328125, 1.484375,
        0.15625, 0.625, -0.15625, 1.140625, -2.40625, -0.140625, 0.421875, 1.9375,
        0.6875, -0.140625, -3., 0.890625, -0.625, -0.203125, 0.453125, -2.265625,
        -0.109375, 0.046875, -0.5, -0.3125, -0.90625, 0.34375, 0.84375, 0.015625,
        -1.125, -1.3125, 0.859375, 1.5,
    ];
    assert_close(&out, &[1, 3, 3, 4], &expected);
}

#[test]
fn dense_contracts_the_last_axis() {
    // kernel [in=3, units=2] = [[1, 2], [0, 1], [1, -1]], bias [0.5, -0.5]:
    // [1, 2, 3]  -> [1 + 0 + 3 + 0.5, 2 + 2 - 3 - 0.5] = [4.5, 0.5]
    // [0, -1, 1] -> [0 + 0 + 1 + 0.5, 0 - 1 - 1 - 0.5] = [1.5, -2.5]
    let x = t(&[2, 3], &[1., 2., 3., 0., -1., 1.]);
    let k = t(&[3, 2], &[1., 2., 0., 1., 1., -1.]);
    let b = t(&[2], &[0.5, -0.5]);
    let op = Op::Dense {
        units: 2,
        bias: true,
    };
    assert_close(
        &forward(&op, &[&x], &[&k, &b], false),
        &[2, 2],
        &[4.5, 0.5, 1.5, -2.5],
    );
    let op = Op::Dense {
        units: 2,
        bias: false,
    };
    assert_close(
        &forward(&op, &[&x], &[&k], false),
        &[2, 2],
        &[4., 1., 1., -2.],
    );
}

#[test]
fn rbf_is_the_squared_distance_to_each_centre() {
    // centers [in=2, units=3] = [[0, 1, 3], [0, 2, -1]]: centres (0,0), (1,2), (3,-1).
    // x = (1, 2): 1 + 4 = 5, 0, 4 + 9 = 13.
    let x = t(&[1, 2], &[1., 2.]);
    let centers = t(&[2, 3], &[0., 1., 3., 0., 2., -1.]);
    let out = forward(&Op::Rbf { units: 3 }, &[&x], &[&centers], false);
    assert_close(&out, &[1, 3], &[5., 0., 13.]);
}

// ---------------------------------------------------------------------------
// Pooling and reshaping.

#[test]
fn avg_pool_same_excludes_padding_from_the_count() {
    // 3x3 image 1..9, 2x2 windows, stride 2, same: padding (0, 1) per axis.
    // (0,0): (1+2+4+5)/4 = 3   (0,1): (3+6)/2 = 4.5
    // (1,0): (7+8)/2 = 7.5     (1,1): 9/1 = 9
    // (Counting the padded zeros would give 3, 2.25, 3.75, 2.25.)
    let values: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let x = t(&[1, 3, 3, 1], &values);
    let out = forward(&pool(PoolKind::Avg, 2, 2, Padding::Same), &[&x], &[], false);
    assert_close(&out, &[1, 2, 2, 1], &[3., 4.5, 7.5, 9.]);

    // 3x3 windows, stride 1, same: padding (1, 1). Corners average 4 cells,
    // edges 6, the centre 9: (0,0) (1+2+4+5)/4 = 3, (0,1) (1+..+6)/6 = 3.5,
    // (0,2) (2+3+5+6)/4 = 4, (1,0) (1+2+4+5+7+8)/6 = 4.5, (1,1) 45/9 = 5, ...
    let out = forward(&pool(PoolKind::Avg, 3, 1, Padding::Same), &[&x], &[], false);
    assert_close(
        &out,
        &[1, 3, 3, 1],
        &[3., 3.5, 4., 4.5, 5., 5.5, 6., 6.5, 7.],
    );
}

#[test]
fn max_pool_takes_the_window_max_and_ignores_padding() {
    // Valid 2x2 stride 2 on
    //   1 5 2 0
    //   3 4 8 7
    //   9 6 1 1
    //   0 2 3 5
    // -> max(1,5,3,4) = 5, max(2,0,8,7) = 8, max(9,6,0,2) = 9, max(1,1,3,5) = 5.
    #[rustfmt::skip]
    let x = t(&[1, 4, 4, 1], &[
        1., 5., 2., 0.,
        3., 4., 8., 7.,
        9., 6., 1., 1.,
        0., 2., 3., 5.,
    ]);
    let out = forward(
        &pool(PoolKind::Max, 2, 2, Padding::Valid),
        &[&x],
        &[],
        false,
    );
    assert_close(&out, &[1, 2, 2, 1], &[5., 8., 9., 5.]);

    // All-negative 3x3 image -1..-9, 2x2 stride 2 same (padding after): the
    // padded windows must not see a zero: -1, max(-3,-6) = -3, max(-7,-8) = -7, -9.
    let values: Vec<f32> = (1..=9).map(|v| -(v as f32)).collect();
    let x = t(&[1, 3, 3, 1], &values);
    let out = forward(&pool(PoolKind::Max, 2, 2, Padding::Same), &[&x], &[], false);
    assert_close(&out, &[1, 2, 2, 1], &[-1., -3., -7., -9.]);
}

/// Explicit padding `[top, bottom, left, right]`, rounded up with `ceil`.
fn explicit([top, bottom, left, right]: [u64; 4], ceil: bool) -> Padding {
    Padding::explicit([[top, bottom], [left, right]], ceil)
}

/// The 5x5 image 1..25, row-major.
fn image_1_to_25() -> ArrayD<f32> {
    let values: Vec<f32> = (1..=25).map(|v| v as f32).collect();
    t(&[1, 5, 5, 1], &values)
}

#[test]
fn explicit_padding_in_max_pooling_never_wins() {
    // -1..-16 padded by one on every side, 2x2 windows, stride 2: 6 padded
    // positions, (6 - 2) / 2 + 1 = 3 windows per axis, over rows (and
    // columns) {-1, 0}, {1, 2}, {3, 4}. A padded zero would win every one:
    // (0,0) -1; (0,1) max(-2, -3) = -2; (0,2) -4; (1,0) max(-5, -9) = -5;
    // (1,1) max(-6, -7, -10, -11) = -6; (1,2) -8; (2,0) -13; (2,1) -14; (2,2) -16.
    let x = image_1_to_16().mapv(|v| -v);
    let out = forward(
        &pool(PoolKind::Max, 2, 2, explicit([1, 1, 1, 1], false)),
        &[&x],
        &[],
        false,
    );
    assert_close(
        &out,
        &[1, 3, 3, 1],
        &[-1., -2., -4., -5., -6., -8., -13., -14., -16.],
    );
}

#[test]
fn explicit_padding_in_average_pooling_is_left_out_of_the_mean() {
    // The windows above on 1..16: each the mean of its cells in the image,
    // as `same` does (PyTorch's default, count_include_pad, would divide
    // (0,0) by 4 and give 0.25, not 1).
    // (0,0) 1; (0,1) (2+3)/2; (0,2) 4; (1,0) (5+9)/2; (1,1) (6+7+10+11)/4;
    // (1,2) (8+12)/2; (2,0) 13; (2,1) (14+15)/2; (2,2) 16.
    let out = forward(
        &pool(PoolKind::Avg, 2, 2, explicit([1, 1, 1, 1], false)),
        &[&image_1_to_16()],
        &[],
        false,
    );
    assert_close(
        &out,
        &[1, 3, 3, 1],
        &[1., 2.5, 4., 7., 8.5, 10., 13., 14.5, 16.],
    );
}

#[test]
fn ceil_mode_follows_pytorchs_formula() {
    // PyTorch: out = ceil((in + pads - size) / stride) + 1, less one if the
    // last window would start at or past in + pad_before.
    // 5x5, 2x2 windows, stride 2, no padding: ceil(3 / 2) + 1 = 3 (the floor
    // gives 2); the last window starts at 4 < 5, over row (column) 4 only.
    // Max: (0,0) 7, (0,1) 9, (0,2) 10, (1,0) 17, (1,1) 19, (1,2) 20,
    // (2,0) 22, (2,1) 24, (2,2) 25.
    let ceil = explicit([0, 0, 0, 0], true);
    let out = forward(
        &pool(PoolKind::Max, 2, 2, ceil),
        &[&image_1_to_25()],
        &[],
        false,
    );
    assert_close(
        &out,
        &[1, 3, 3, 1],
        &[7., 9., 10., 17., 19., 20., 22., 24., 25.],
    );
    // The average of the cells that exist (PyTorch too divides a window
    // hanging over the end by its cells inside): (0,0) (1+2+6+7)/4 = 4,
    // (0,1) (3+4+8+9)/4 = 6, (0,2) (5+10)/2 = 7.5, (1,0) (11+12+16+17)/4 = 14,
    // (1,1) 16, (1,2) (15+20)/2 = 17.5, (2,0) (21+22)/2 = 21.5,
    // (2,1) 23.5, (2,2) 25.
    let out = forward(
        &pool(PoolKind::Avg, 2, 2, ceil),
        &[&image_1_to_25()],
        &[],
        false,
    );
    assert_close(
        &out,
        &[1, 3, 3, 1],
        &[4., 6., 7.5, 14., 16., 17.5, 21.5, 23.5, 25.],
    );
    // 3x3 padded by one on every side, 2x2 windows, stride 2:
    // ceil((3 + 2 - 2) / 2) + 1 = 3, but (3 - 1) * 2 = 4 >= 3 + 1, so that
    // window would see only padding: 2, as without ceil_mode.
    // Windows over {-1, 0}, {1, 2}: max (0,0) 1, (0,1) 3, (1,0) 7, (1,1) 9.
    let values: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let x = t(&[1, 3, 3, 1], &values);
    let out = forward(
        &pool(PoolKind::Max, 2, 2, explicit([1, 1, 1, 1], true)),
        &[&x],
        &[],
        false,
    );
    assert_close(&out, &[1, 2, 2, 1], &[1., 3., 7., 9.]);
}

#[test]
fn zero_padding_and_cropping_move_the_image() {
    // [[1, 2], [3, 4]] padded by one row on top and two columns on the right.
    let pad = |top, bottom, left, right| Op::Pad {
        top,
        bottom,
        left,
        right,
    };
    let x = t(&[1, 2, 2, 1], &[1., 2., 3., 4.]);
    let out = forward(&pad(1, 0, 0, 2), &[&x], &[], false);
    #[rustfmt::skip]
    let padded = [
        0., 0., 0., 0.,
        1., 2., 0., 0.,
        3., 4., 0., 0.,
    ];
    assert_close(&out, &[1, 3, 4, 1], &padded);
    // 1..16 cropped by one row on top, one column on the left and two on
    // the right: rows 1..3 of column 1.
    let out = forward(&pad(-1, 0, -1, -2), &[&image_1_to_16()], &[], false);
    assert_close(&out, &[1, 3, 1, 1], &[6., 10., 14.]);
}

#[test]
fn conv_explicit_padding_pads_each_side_as_given() {
    // tf.nn.conv2d(padding=[[0, 0], [1, 0], [0, 0], [0, 0]]): one zero row
    // on top only, so out[y][x] = img[y - 1][x + 1] + 10 img[y][x + 2] on
    // (4 + 1 - 3) + 1 = 3 rows and 4 - 3 + 1 = 2 columns:
    // (0,0) 0 + 10*3 = 30, (0,1) 10*4 = 40, (1,0) 2 + 70 = 72, (1,1) 3 + 80 = 83,
    // (2,0) 6 + 110 = 116, (2,1) 7 + 120 = 127.
    let out = forward(
        &conv(1, 3, 1, explicit([1, 0, 0, 0], false), 1, false),
        &[&image_1_to_16()],
        &[&asymmetric_kernel()],
        false,
    );
    assert_close(&out, &[1, 3, 2, 1], &[30., 40., 72., 83., 116., 127.]);
    // In general, the valid convolution of the zero-padded image, strided
    // and dilated too.
    let x = ramp(&[2, 5, 6, 3], 1);
    let kernel = ramp(&[3, 3, 3, 2], 2);
    let pads = [2, 1, 0, 3];
    let padded = reference::pad(&x, pads.map(|p| p as i64));
    for (stride, dilation) in [(1, 1), (2, 1), (1, 2)] {
        let op = conv(2, 3, stride, explicit(pads, false), dilation, false);
        let out = forward(&op, &[&x], &[&kernel], false);
        let valid = conv(2, 3, stride, Padding::Valid, dilation, false);
        let expected = forward(&valid, &[&padded], &[&kernel], false);
        let values: Vec<f64> = expected.iter().map(|&v| f64::from(v)).collect();
        assert_close(&out, expected.shape(), &values);
        // The depthwise convolution too.
        let depthwise = |padding| Op::DepthwiseConv2d {
            multiplier: 2,
            kernel: [3, 3],
            stride: [stride, stride],
            padding,
            dilation: [dilation, dilation],
            bias: false,
        };
        let out = forward(&depthwise(explicit(pads, false)), &[&x], &[&kernel], false);
        let expected = forward(&depthwise(Padding::Valid), &[&padded], &[&kernel], false);
        let values: Vec<f64> = expected.iter().map(|&v| f64::from(v)).collect();
        assert_close(&out, expected.shape(), &values);
    }
}

#[test]
fn pooling_keeps_channels_and_examples_apart() {
    // Two examples of 2x2x2, a 2x2 valid window: one output pixel per example.
    // Example 0: channel 0 = 1, 2, 3, 6; channel 1 = -1, -5, 0, -2.
    // Example 1: channel 0 = 0, 0, 0, 4; channel 1 = 0, 0, 0, 8.
    let x = t(
        &[2, 2, 2, 2],
        &[
            1., -1., 2., -5., 3., 0., 6., -2., 0., 0., 0., 0., 0., 0., 4., 8.,
        ],
    );
    let max = forward(
        &pool(PoolKind::Max, 2, 1, Padding::Valid),
        &[&x],
        &[],
        false,
    );
    assert_close(&max, &[2, 1, 1, 2], &[6., 0., 4., 8.]);
    let avg = forward(
        &pool(PoolKind::Avg, 2, 1, Padding::Valid),
        &[&x],
        &[],
        false,
    );
    assert_close(&avg, &[2, 1, 1, 2], &[3., -2., 1., 2.]);

    // Global pools of the same tensor: [batch, c], the same numbers.
    let gmax = forward(
        &Op::GlobalPool {
            kind: PoolKind::Max,
        },
        &[&x],
        &[],
        false,
    );
    assert_close(&gmax, &[2, 2], &[6., 0., 4., 8.]);
    let gavg = forward(
        &Op::GlobalPool {
            kind: PoolKind::Avg,
        },
        &[&x],
        &[],
        false,
    );
    assert_close(&gavg, &[2, 2], &[3., -2., 1., 2.]);
}

#[test]
fn global_pools_reduce_height_and_width() {
    // 1x3x1 image, 2 channels: channel 0 = 1, 2, 6 (mean 3), channel 1 = -4, -1, -1 (mean -2).
    let x = t(&[1, 1, 3, 2], &[1., -4., 2., -1., 6., -1.]);
    let gavg = forward(
        &Op::GlobalPool {
            kind: PoolKind::Avg,
        },
        &[&x],
        &[],
        false,
    );
    assert_close(&gavg, &[1, 2], &[3., -2.]);
    let gmax = forward(
        &Op::GlobalPool {
            kind: PoolKind::Max,
        },
        &[&x],
        &[],
        false,
    );
    assert_close(&gmax, &[1, 2], &[6., -1.]);
}

#[test]
fn depth_max_pool_takes_groups_of_consecutive_channels() {
    // Two pixels of 6 channels, groups of 3:
    // [1, 5, 2 | -1, -3, -2] -> [5, -1];  [0, 0, 7 | 9, 8, 1] -> [7, 9].
    let x = t(
        &[1, 1, 2, 6],
        &[1., 5., 2., -1., -3., -2., 0., 0., 7., 9., 8., 1.],
    );
    let out = forward(&Op::DepthMaxPool { size: 3 }, &[&x], &[], false);
    assert_close(&out, &[1, 1, 2, 2], &[5., -1., 7., 9.]);
}

// ---------------------------------------------------------------------------
// Pooling gradients with tied maxima, from TensorFlow (`tests/tf/ties.py`).

/// Asserts `actual` is TensorFlow's `expected` to within one unit in the
/// last place: TensorFlow rounds `1 / count` to f32 before multiplying by
/// `dy`, the reference rounds `dy / count` once.
#[track_caller]
fn assert_tf(what: &str, actual: &ArrayD<f32>, shape: [usize; 4], expected: &[f32]) {
    assert_eq!(actual.shape(), shape, "{what}: shape");
    let got: Vec<f32> = actual.iter().copied().collect();
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= f32::EPSILON * e.abs(),
            "{what}: value {i}: got {g}, TensorFlow {e}\n got: {got:?}\n TensorFlow: {expected:?}"
        );
    }
}

#[test]
fn global_max_pool_gradient_splits_ties_equally_as_tensorflow() {
    // By hand: all_equal gives each of 9 pixels 1/9 and -3/9 = -1/3;
    // relu_zeroed's all-zero channels give 5/6 and -6/6 = -1 to each of 6;
    // two_and_three_of_many gives 5/2 to two pixels and 1/3 to three.
    let op = Op::GlobalPool {
        kind: PoolKind::Max,
    };
    for case in tf_ties::GLOBAL_MAX_POOL {
        let x = t(&case.shape, case.x);
        let dy = t(&[case.shape[0], case.shape[3]], case.dy);
        let y = forward(&op, &[&x], &[], false);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            case.y,
            "{}",
            case.name
        );
        let dx = reference::global_pool_grad(&x, &dy, PoolKind::Max);
        assert_tf(case.name, &dx, case.shape, case.dx);
        if case.name == "all_equal" {
            let exact = [1.0 / 9.0, -1.0 / 3.0].repeat(9);
            assert_eq!(case.dx, exact, "TensorFlow");
            assert_eq!(dx.iter().copied().collect::<Vec<_>>(), exact, "reference");
        }
    }
}

#[test]
fn depth_max_pool_gradient_splits_ties_equally_as_tensorflow() {
    // By hand: all_equal gives 1/3 and 5/3 to each channel of its group;
    // relu_zeroed's all-zero groups of 4 give a quarter of dy to each;
    // two_and_three_of_many gives 7/2 to two channels and 1/3 to three.
    for (size, case) in tf_ties::DEPTH_MAX_POOL {
        let x = t(&case.shape, case.x);
        let [n, h, w, c] = case.shape;
        let dy = t(&[n, h, w, c / size], case.dy);
        let op = Op::DepthMaxPool { size: *size as u64 };
        let y = forward(&op, &[&x], &[], false);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            case.y,
            "{}",
            case.name
        );
        let dx = reference::depth_max_pool_grad(&x, &dy, *size);
        assert_tf(case.name, &dx, case.shape, case.dx);
        if case.name == "all_equal" {
            // 1/3 rounds the same either way; 5/3 does not: TensorFlow's
            // f32 1/3 times 5 is one unit above the nearest f32 to 5/3.
            let third = 1.0f32 / 3.0;
            assert_eq!(case.dx[..3], [third; 3], "TensorFlow");
            assert_eq!(case.dx[3..], [third * 5.0; 3], "TensorFlow");
            assert_eq!(third * 5.0, f32::from_bits((5.0f32 / 3.0).to_bits() + 1));
            assert_eq!(
                dx.iter().copied().collect::<Vec<_>>()[..3],
                [third; 3],
                "reference"
            );
        }
    }
}

#[test]
fn max_pool_gradient_goes_to_the_first_tied_maximum_as_tensorflow() {
    // By hand: every window of all_equal and all_equal_overlapping gives
    // its whole dy to its top-left pixel; first_and_last's 3x3 window holds
    // 3 at its first and last position and gives dy = 5 to the first.
    for (size, stride, padding, case) in tf_ties::MAX_POOL {
        let x = t(&case.shape, case.x);
        let [n, h, w, c] = case.shape;
        let out = |len: usize, axis: usize| {
            let padding = padding.axis(axis);
            cnnc::ops::output_size(len as u64, *size as u64, *stride as u64, 1, padding)
        };
        let (oh, ow) = (
            out(h, 0).expect("fits") as usize,
            out(w, 1).expect("fits") as usize,
        );
        let dy = t(&[n, oh, ow, c], case.dy);
        let (size, stride) = ([*size as u64; 2], [*stride as u64; 2]);
        let y = reference::pool2d(&x, PoolKind::Max, size, stride, *padding);
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            case.y,
            "{}",
            case.name
        );
        let dx = reference::pool2d_grad(&x, &dy, PoolKind::Max, size, stride, *padding);
        assert_tf(case.name, &dx, case.shape, case.dx);
    }
}

#[test]
fn flatten_is_row_major_h_w_c() {
    // x[0, h, w, c] = 100 h + 10 w + c, stored column-major in memory so that
    // only the logical order can give the right answer.
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[1, 2, 2, 2]).f());
    for h in 0..2 {
        for w in 0..2 {
            for c in 0..2 {
                x[[0, h, w, c]] = (100 * h + 10 * w + c) as f32;
            }
        }
    }
    let out = forward(&Op::Flatten, &[&x], &[], false);
    assert_close(&out, &[1, 8], &[0., 1., 10., 11., 100., 101., 110., 111.]);
}

// ---------------------------------------------------------------------------
// Dropout and normalisation.

#[test]
fn dropout_is_the_identity_at_inference() {
    let x = t(&[1, 4], &[1., -2., 3., 4.]);
    let out = forward(&Op::Dropout { rate: 0.5 }, &[&x], &[], false);
    assert_close(&out, &[1, 4], &[1., -2., 3., 4.]);
}

#[test]
fn dropout_with_mask_scales_the_kept_values() {
    // rate 0.75: kept values are multiplied by 1 / (1 - 0.75) = 4.
    let x = t(&[1, 4], &[1., -2., 3., 4.]);
    let mask = t(&[1, 4], &[1., 0., 1., 0.]);
    let out = reference::dropout_with_mask(&x, &mask, 0.75);
    assert_close(&out, &[1, 4], &[4., 0., 12., 0.]);
}

#[test]
fn batchnorm_inference_uses_the_moving_statistics() {
    // gamma [2, 0.5], beta [1, -1], moving mean [1, 2], moving variance
    // [3.999, 0.249], epsilon 0.001: standard deviations 2 and 0.5.
    // channel 0: 2 * (x - 1) / 2 + 1:       x = 1 -> 1,  x = 3 -> 3
    // channel 1: 0.5 * (x - 2) / 0.5 - 1:   x = 2 -> -1, x = 6 -> 3
    let op = Op::BatchNorm {
        momentum: 0.99,
        epsilon: 0.001,
        center: true,
        scale: true,
    };
    let x = t(&[2, 2], &[1., 2., 3., 6.]);
    let (gamma, beta) = (t(&[2], &[2., 0.5]), t(&[2], &[1., -1.]));
    let (mean, var) = (t(&[2], &[1., 2.]), t(&[2], &[3.999, 0.249]));
    let out = forward(&op, &[&x], &[&gamma, &beta, &mean, &var], false);
    assert_close(&out, &[2, 2], &[1., -1., 3., 3.]);
    // Keras's `scale=False` drops gamma (a factor of 1), `center=False`
    // beta (an offset of 0):
    // channel 0: (x - 1) / 2 + 1 -> 1, 2;  channel 1: (x - 2) / 0.5 - 1 -> -1, 7
    let unscaled = Op::BatchNorm {
        momentum: 0.99,
        epsilon: 0.001,
        center: true,
        scale: false,
    };
    let out = forward(&unscaled, &[&x], &[&beta, &mean, &var], false);
    assert_close(&out, &[2, 2], &[1., -1., 2., 7.]);
    // channel 0: 2 (x - 1) / 2 -> 0, 2;  channel 1: 0.5 (x - 2) / 0.5 -> 0, 4
    let uncentred = Op::BatchNorm {
        momentum: 0.99,
        epsilon: 0.001,
        center: false,
        scale: true,
    };
    let out = forward(&uncentred, &[&x], &[&gamma, &mean, &var], false);
    assert_close(&out, &[2, 2], &[0., 0., 2., 4.]);
}

/// The training-mode batch: [2, 1, 2, 2], channel 0 = 1, 4, 5, 6 (mean 4,
/// biased variance (9 + 0 + 1 + 4) / 4 = 3.5), channel 1 = 7, 12, 11, 10
/// (mean 10, biased variance (9 + 4 + 1 + 0) / 4 = 3.5; unbiased would be 14/3).
fn batchnorm_batch() -> ArrayD<f32> {
    t(&[2, 1, 2, 2], &[1., 7., 4., 12., 5., 11., 6., 10.])
}

#[test]
fn batchnorm_training_uses_the_batch_statistics() {
    // epsilon 0.5, so both standard deviations are sqrt(3.5 + 0.5) = 2;
    // gamma [1, 3], beta [0, 1]; the moving statistics must not matter.
    // channel 0: (x - 4) / 2:           1, 4, 5, 6   -> -1.5, 0, 0.5, 1
    // channel 1: 3 (x - 10) / 2 + 1:    7, 12, 11, 10 -> -3.5, 4, 2.5, 1
    // Also from TensorFlow: keras.layers.BatchNormalization(momentum=0.9,
    // epsilon=0.5)(x, training=True) gives the same.
    let op = Op::BatchNorm {
        momentum: 0.9,
        epsilon: 0.5,
        center: true,
        scale: true,
    };
    let x = batchnorm_batch();
    let (gamma, beta) = (t(&[2], &[1., 3.]), t(&[2], &[0., 1.]));
    let (mean, var) = (t(&[2], &[100., -100.]), t(&[2], &[50., 60.]));
    let out = forward(&op, &[&x], &[&gamma, &beta, &mean, &var], true);
    assert_close(&out, &[2, 1, 2, 2], &[-1.5, -3.5, 0., 4., 0.5, 2.5, 1., 1.]);

    let (batch_mean, batch_var) = reference::batchnorm_moments(&x);
    assert_close(&batch_mean, &[2], &[4., 10.]);
    assert_close(&batch_var, &[2], &[3.5, 3.5]);
}

#[test]
fn batchnorm_moving_update_follows_keras_3() {
    // momentum 0.9, moving mean [1, 2], moving variance [1, 2]:
    // mean:     0.9 * 1 + 0.1 * 4 = 1.3,    0.9 * 2 + 0.1 * 10 = 2.8
    // variance: 0.9 * 1 + 0.1 * 3.5 = 1.25, 0.9 * 2 + 0.1 * 3.5 = 2.15
    // (the biased batch variance; Bessel's correction would give 1.3667, 2.2667).
    // Also from TensorFlow: Keras 3.15's BatchNormalization, after one
    // training call on this batch, holds moving_mean [1.3, 2.8] and
    // moving_variance [1.25, 2.15].
    let (mean, var) = (t(&[2], &[1., 2.]), t(&[2], &[1., 2.]));
    let (new_mean, new_var) =
        reference::batchnorm_moving_update(&batchnorm_batch(), &mean, &var, 0.9);
    assert_close(&new_mean, &[2], &[1.3, 2.8]);
    assert_close(&new_var, &[2], &[1.25, 2.15]);
}

#[test]
fn lrn_sums_squares_over_the_channel_window() {
    // x = [1, 2, 3, 4, 5], depth_radius 1: squared sums over c-1..c+1 within
    // range: 1+4 = 5, 1+4+9 = 14, 4+9+16 = 29, 9+16+25 = 50, 16+25 = 41.
    // bias 1, alpha 0.1, beta 1: x / (1 + 0.1 s) =
    // 1/1.5, 2/2.4, 3/3.9, 4/6, 5/5.1.
    let op = Op::Lrn {
        depth_radius: 1,
        bias: 1.0,
        alpha: 0.1,
        beta: 1.0,
    };
    let x = t(&[1, 1, 1, 5], &[1., 2., 3., 4., 5.]);
    let out = forward(&op, &[&x], &[], false);
    assert_close(
        &out,
        &[1, 1, 1, 5],
        &[1. / 1.5, 2. / 2.4, 3. / 3.9, 4. / 6., 5. / 5.1],
    );
}

#[test]
fn lrn_with_fractional_beta_matches_tensorflow() {
    // From TensorFlow: tf.nn.local_response_normalization([1, 2, 3, 4, 5],
    // depth_radius=2, bias=2, alpha=0.1, beta=0.75). By hand, the first:
    // s = 1 + 4 + 9 = 14, 1 / (2 + 1.4)^0.75 = 0.3993841.
    let op = Op::Lrn {
        depth_radius: 2,
        bias: 2.0,
        alpha: 0.1,
        beta: 0.75,
    };
    let x = t(&[1, 1, 1, 5], &[1., 2., 3., 4., 5.]);
    let out = forward(&op, &[&x], &[], false);
    assert_close(
        &out,
        &[1, 1, 1, 5],
        &[0.3993841, 0.5981395, 0.6619501, 0.8915304, 1.16184],
    );
}

#[test]
fn scale_bias_is_per_channel() {
    // coefficient [2, -1], bias [0.5, 3]: [1, 2] -> [2.5, 1]; [-1, 4] -> [-1.5, -1].
    let x = t(&[1, 1, 2, 2], &[1., 2., -1., 4.]);
    let (k, b) = (t(&[2], &[2., -1.]), t(&[2], &[0.5, 3.]));
    let out = forward(&Op::ScaleBias, &[&x], &[&k, &b], false);
    assert_close(&out, &[1, 1, 2, 2], &[2.5, 1., -1.5, -1.]);
}

// ---------------------------------------------------------------------------
// Activations. Points -2, -0.5, 0, 0.5, 2; the transcendental values are
// from Python's math module, and agree with keras.activations to 7 digits.

fn points() -> ArrayD<f32> {
    t(&[1, 5], &[-2., -0.5, 0., 0.5, 2.])
}

fn act(a: Activation) -> ArrayD<f32> {
    forward(&Op::Activation(a), &[&points()], &[], false)
}

#[test]
fn piecewise_linear_activations() {
    assert_close(&act(Activation::Relu), &[1, 5], &[0., 0., 0., 0.5, 2.]);
    assert_close(
        &act(Activation::LeakyRelu { alpha: 0.1 }),
        &[1, 5],
        &[-0.2, -0.05, 0., 0.5, 2.],
    );
}

#[test]
fn exponential_activations() {
    // elu: alpha (exp(x) - 1) below 0: exp(-2) - 1 = -0.86466472, exp(-0.5) - 1 = -0.39346934.
    assert_close(
        &act(Activation::Elu { alpha: 1.0 }),
        &[1, 5],
        &[-0.86466472, -0.39346934, 0., 0.5, 2.],
    );
    assert_close(
        &act(Activation::Elu { alpha: 2.0 }),
        &[1, 5],
        &[-1.72932943, -0.78693868, 0., 0.5, 2.],
    );
    // selu: 1.0507009873554805 * (x, or 1.6732632423543772 (exp(x) - 1)).
    assert_close(
        &act(Activation::Selu),
        &[1, 5],
        &[-1.52016647, -0.69175819, 0., 0.52535049, 2.10140197],
    );
}

#[test]
fn squashing_activations() {
    assert_close(
        &act(Activation::Tanh),
        &[1, 5],
        &[-0.96402758, -0.46211716, 0., 0.46211716, 0.96402758],
    );
    assert_close(
        &act(Activation::Sigmoid),
        &[1, 5],
        &[0.11920292, 0.37754067, 0.5, 0.62245933, 0.88079708],
    );
    // Far out, no overflow: sigmoid(-100) ~ 3.7e-44, sigmoid(100) = 1.
    let far = t(&[1, 2], &[-100., 100.]);
    let out = forward(&Op::Activation(Activation::Sigmoid), &[&far], &[], false);
    assert_close(&out, &[1, 2], &[0., 1.]);
}

/// The activations after the chapter at points on every piece of the
/// clipped ones (the kinks of relu6 at 0 and 6, of the hard ones at -3 and
/// 3); the values are TensorFlow 2.21's (`keras.activations.relu6`,
/// `silu`, `gelu` with `approximate` false and true, `hard_sigmoid`,
/// `hard_silu`, `mish`), printed to 8 digits. They agree with the formulas
/// in f64 to 1e-7, except gelu's tanh form at -4, where TensorFlow's f32
/// `1 + tanh` cancels (-7.0214e-5 against -7.0246e-5).
#[test]
fn activations_after_the_chapter() {
    let x = t(&[1, 8], &[-4., -2., -0.5, 0., 0.5, 2., 4., 7.]);
    let cases: [(Activation, [f64; 8]); 7] = [
        (Activation::Relu6, [0., 0., 0., 0., 0.5, 2., 4., 6.]),
        (
            Activation::Swish,
            [
                -0.07194484,
                -0.23840588,
                -0.18877034,
                0.,
                0.31122968,
                1.7615942,
                3.928055,
                6.9936228,
            ],
        ),
        (
            Activation::Gelu { approximate: false },
            [
                -0.00012668502,
                -0.045500264,
                -0.15426877,
                0.,
                0.34573123,
                1.9544997,
                3.9998734,
                7.,
            ],
        ),
        (
            Activation::Gelu { approximate: true },
            [
                -7.0214272e-05,
                -0.045402229,
                -0.154286,
                0.,
                0.345714,
                1.9545977,
                3.9999299,
                7.,
            ],
        ),
        (
            Activation::HardSigmoid,
            [
                0., 0.16666667, 0.41666666, 0.5, 0.58333331, 0.83333331, 1., 1.,
            ],
        ),
        (
            Activation::HardSwish,
            [
                0.,
                -0.33333334,
                -0.20833333,
                0.,
                0.29166666,
                1.6666666,
                4.,
                7.,
            ],
        ),
        (
            Activation::Mish,
            [
                -0.072591737,
                -0.25250146,
                -0.22074378,
                0.,
                0.37524518,
                1.943959,
                3.9974124,
                6.999989,
            ],
        ),
    ];
    for (activation, expected) in cases {
        let out = forward(&Op::Activation(activation), &[&x], &[], false);
        assert_close(&out, &[1, 8], &expected);
    }
}

#[test]
fn reshape_keeps_the_row_major_order() {
    // As Keras's Reshape((3, -1)) and Reshape((2, 3)): one example of shape
    // [3, 1, 2] holding 1..6 keeps them in row-major order.
    let x = t(&[1, 3, 1, 2], &[1., 2., 3., 4., 5., 6.]);
    let out = forward(&Op::Reshape { shape: vec![3, -1] }, &[&x], &[], false);
    assert_close(&out, &[1, 3, 2], &[1., 2., 3., 4., 5., 6.]);
    let out = forward(&Op::Reshape { shape: vec![2, 3] }, &[&x], &[], false);
    assert_close(&out, &[1, 2, 3], &[1., 2., 3., 4., 5., 6.]);
}

#[test]
fn channel_slices_keep_a_range_of_the_last_axis() {
    // As x[..., 1:3] and x[..., -2:] in TensorFlow: two pixels of 4 channels.
    let x = t(&[1, 1, 2, 4], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    let slice = |start, end| Op::ChannelSlice { start, end };
    let out = forward(&slice(1, 3), &[&x], &[], false);
    assert_close(&out, &[1, 1, 2, 2], &[2., 3., 6., 7.]);
    let out = forward(&slice(-2, 4), &[&x], &[], false);
    assert_close(&out, &[1, 1, 2, 2], &[3., 4., 7., 8.]);
    let out = forward(&slice(0, -3), &[&x], &[], false);
    assert_close(&out, &[1, 1, 2, 1], &[1., 5.]);
}

#[test]
fn softmax_normalises_the_last_axis_stably() {
    // softmax(1, 2, 3) = e^(x - 3) / (e^-2 + e^-1 + 1) = 0.09003057, 0.24472847, 0.66524096;
    // shifting by 1000 must change nothing (and not overflow).
    let x = t(
        &[3, 3],
        &[1., 2., 3., 1001., 1002., 1003., -1000., 0., 1000.],
    );
    let out = forward(&Op::Activation(Activation::Softmax), &[&x], &[], false);
    assert_close(
        &out,
        &[3, 3],
        &[
            0.09003057, 0.24472847, 0.66524096, 0.09003057, 0.24472847, 0.66524096, 0., 0., 1.,
        ],
    );
    for row in out.rows() {
        assert_close_scalar(row.sum(), 1.0);
    }
}

// ---------------------------------------------------------------------------
// Merges.

#[test]
fn add_sums_any_number_of_inputs() {
    let a = t(&[1, 1, 1, 3], &[1., 2., 3.]);
    let b = t(&[1, 1, 1, 3], &[10., 20., 30.]);
    let c = t(&[1, 1, 1, 3], &[-0.5, 0., 0.5]);
    let out = forward(&Op::Add, &[&a, &b, &c], &[], false);
    assert_close(&out, &[1, 1, 1, 3], &[10.5, 22., 33.5]);
}

#[test]
fn concat_axis_counts_in_the_per_example_shape() {
    // a: [1, 1, 2, 1] = pixels [1], [2];  b: [1, 1, 2, 2] = pixels [10, 11], [20, 21].
    // Channels (per-example axis 2): pixels [1, 10, 11], [2, 20, 21].
    let a = t(&[1, 1, 2, 1], &[1., 2.]);
    let b = t(&[1, 1, 2, 2], &[10., 11., 20., 21.]);
    let out = forward(&Op::Concat { axis: 2 }, &[&a, &b], &[], false);
    assert_close(&out, &[1, 1, 2, 3], &[1., 10., 11., 2., 20., 21.]);

    // Height (per-example axis 0), two examples: the rows of each example
    // stack, the examples stay apart.
    let a = t(&[2, 1, 1, 1], &[1., 2.]);
    let b = t(&[2, 1, 1, 1], &[10., 20.]);
    let out = forward(&Op::Concat { axis: 0 }, &[&a, &b], &[], false);
    assert_close(&out, &[2, 2, 1, 1], &[1., 10., 2., 20.]);
}

#[test]
fn multiply_broadcasts_per_example_and_channel() {
    // x: two examples of 1x2 pixels with 2 channels; s: per example, per channel.
    // example 0 * [2, 10]: [1, 2] [3, 4] -> [2, 20] [6, 40]
    // example 1 * [-1, 0.5]: [5, 6] [7, 8] -> [-5, 3] [-7, 4]
    let x = t(&[2, 1, 2, 2], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    let expected = [2., 20., 6., 40., -5., 3., -7., 4.];
    let s = t(&[2, 2], &[2., 10., -1., 0.5]);
    assert_close(
        &forward(&Op::Multiply, &[&x, &s], &[], false),
        &[2, 1, 2, 2],
        &expected,
    );
    let s = t(&[2, 1, 1, 2], &[2., 10., -1., 0.5]);
    assert_close(
        &forward(&Op::Multiply, &[&x, &s], &[], false),
        &[2, 1, 2, 2],
        &expected,
    );
    // Same shape: element-wise.
    let s = t(&[2, 1, 2, 2], &[2., 10., 2., 10., -1., 0.5, -1., 0.5]);
    assert_close(
        &forward(&Op::Multiply, &[&x, &s], &[], false),
        &[2, 1, 2, 2],
        &expected,
    );
}

// ---------------------------------------------------------------------------
// Loss.

#[test]
fn crossentropy_of_probabilities() {
    // p = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], labels [0, 1]:
    // (-ln 0.7 - ln 0.1) / 2 = (0.35667494 + 2.30258509) / 2 = 1.32963002.
    // From TensorFlow too: keras.losses.SparseCategoricalCrossentropy() -> 1.32963.
    let p = t(&[2, 3], &[0.7, 0.2, 0.1, 0.1, 0.1, 0.8]);
    let loss = reference::sparse_categorical_crossentropy(&p, &[0, 1], false, 0.0);
    assert_close_scalar(loss, 1.329_630_0);

    // Label smoothing 0.3 over 3 classes: targets 0.7 * onehot + 0.1.
    // Example 0: t = [0.8, 0.1, 0.1]: 0.8 * 0.35667494 + 0.1 * 1.60943791 + 0.1 * 2.30258509 = 0.67654225
    // Example 1: t = [0.1, 0.8, 0.1]: 0.9 * 2.30258509 + 0.1 * 0.22314355 = 2.09464094
    // Mean 1.38559160; from TensorFlow: keras.losses.CategoricalCrossentropy(
    // label_smoothing=0.3) on the one-hot labels -> 1.3855916.
    let loss = reference::sparse_categorical_crossentropy(&p, &[0, 1], false, 0.3);
    assert_close_scalar(loss, 1.385_591_6);
}

#[test]
fn crossentropy_clips_probabilities_like_keras() {
    // p = [1, 0, 0], label 1: the zero is clipped to 1e-7, -ln(1e-7) = 16.1180957.
    // From TensorFlow: SparseCategoricalCrossentropy() -> 16.118095.
    let p = t(&[1, 3], &[1., 0., 0.]);
    assert_close_scalar(
        reference::sparse_categorical_crossentropy(&p, &[1], false, 0.0),
        16.118_095,
    );
    // With smoothing 0.1: t = [1/30, 1 - 0.1 + 1/30, 1/30]:
    // -(1/30) ln(1 - 1e-7) - (0.9 + 1/30 + 1/30) ln(1e-7) = 0.96666667 * 16.1180957 = 15.5808258.
    // From TensorFlow: CategoricalCrossentropy(label_smoothing=0.1) -> 15.580826.
    assert_close_scalar(
        reference::sparse_categorical_crossentropy(&p, &[1], false, 0.1),
        15.580_826,
    );
}

#[test]
fn crossentropy_renormalises_probabilities_like_keras() {
    // p = [0.5, 0.2, 0.1] (sums to 0.8), label 1. Keras' sparse loss takes
    // softmax cross-entropy of log p: -ln 0.2 + ln 0.8 = ln 4 = 1.38629436.
    // Its categorical loss divides by the sum first: with smoothing 0.2,
    // -(1/15 ln 0.625 + (0.8 + 1/15) ln 0.25 + 1/15 ln 0.125) = 1.37141812.
    // From TensorFlow: 1.3862944 and 1.3714181.
    let p = t(&[1, 3], &[0.5, 0.2, 0.1]);
    assert_close_scalar(
        reference::sparse_categorical_crossentropy(&p, &[1], false, 0.0),
        1.386_294_4,
    );
    assert_close_scalar(
        reference::sparse_categorical_crossentropy(&p, &[1], false, 0.2),
        1.371_418_1,
    );
}

#[test]
fn crossentropy_from_logits() {
    // logits [[2, 1, 0], [0.5, -1, 3]], labels [0, 1]. -log_softmax = lse - z:
    // row 0: lse = 2.40760596, [0.40760596, 1.40760596, 2.40760596]
    // row 1: lse = 3.09567433, [2.59567433, 4.09567433, 0.09567433]
    // The labels pick 0.40760596 and 4.09567433: mean 2.25164015.
    // From TensorFlow: SparseCategoricalCrossentropy(from_logits=True) -> 2.2516403.
    let z = t(&[2, 3], &[2., 1., 0., 0.5, -1., 3.]);
    let loss = reference::sparse_categorical_crossentropy(&z, &[0, 1], true, 0.0);
    assert_close_scalar(loss, 2.251_640_1);
    // Smoothing 0.2: targets 0.8 * onehot + 0.2 / 3:
    // row 0: 0.8 * 0.40760596 + (0.2 / 3) * 4.22281789 = 0.60760596
    // row 1: 0.8 * 4.09567433 + (0.2 / 3) * 6.78702299 = 3.72900766; mean 2.16830681.
    // From TensorFlow: CategoricalCrossentropy(from_logits=True, label_smoothing=0.2) -> 2.1683068.
    let loss = reference::sparse_categorical_crossentropy(&z, &[0, 1], true, 0.2);
    assert_close_scalar(loss, 2.168_306_8);

    // The same logits through softmax, as probabilities, give the same loss.
    let p = forward(&Op::Activation(Activation::Softmax), &[&z], &[], false);
    let loss = reference::sparse_categorical_crossentropy(&p, &[0, 1], false, 0.0);
    assert_close_scalar(loss, 2.251_640_1);
}

fn conv_transpose(padding: Padding, output_padding: Option<[u64; 2]>) -> Op {
    Op::ConvTranspose2d {
        filters: 1,
        kernel: [3, 3],
        stride: [2, 2],
        padding,
        output_padding,
        dilation: [1, 1],
        bias: false,
    }
}

#[test]
fn conv_transpose_scatters_each_input_over_the_kernel_as_tensorflow_does() {
    // From TensorFlow: keras.layers.Conv2DTranspose(1, 3, strides=2,
    // use_bias=False) on [[1, 2], [3, 4]] with the kernel 1..9. By hand,
    // valid: each input value scatters its 3x3 copy of the kernel at twice
    // its position, overlapping copies add: out[0, 2] = 3 * 1 + 1 * 2 = 5,
    // out[2, 2] = 9 + 2 * 7 + 3 * 3 + 4 * 1 = 36.
    let x = t(&[1, 2, 2, 1], &[1., 2., 3., 4.]);
    let kernel = t(&[3, 3, 1, 1], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let valid = [
        1., 2., 5., 4., 6., //
        4., 5., 14., 10., 12., //
        10., 14., 36., 24., 30., //
        12., 15., 34., 20., 24., //
        21., 24., 55., 32., 36.,
    ];
    let out = forward(
        &conv_transpose(Padding::Valid, None),
        &[&x],
        &[&kernel],
        false,
    );
    assert_close(&out, &[1, 5, 5, 1], &valid);
    // `output_padding: 1` adds a row and a column of zeros at the end.
    let out = forward(
        &conv_transpose(Padding::Valid, Some([1, 1])),
        &[&x],
        &[&kernel],
        false,
    );
    let mut padded = Vec::new();
    for row in valid.chunks(5) {
        padded.extend_from_slice(row);
        padded.push(0.);
    }
    padded.extend([0.; 6]);
    assert_close(&out, &[1, 6, 6, 1], &padded);
    // `same`: 4x4, the convolution back pads the 4x4 output by 0 before
    // and 1 after, so it is the top-left of the valid output; with
    // `output_padding: 1` the same size and values.
    let top_left: Vec<f64> = valid
        .chunks(5)
        .take(4)
        .flat_map(|r| r[..4].to_vec())
        .collect();
    for extra in [None, Some([1, 1])] {
        let out = forward(
            &conv_transpose(Padding::Same, extra),
            &[&x],
            &[&kernel],
            false,
        );
        assert_close(&out, &[1, 4, 4, 1], &top_left);
    }
}

#[test]
fn conv_transpose_kernels_hold_the_filters_before_the_input_channels() {
    // From TensorFlow: Conv2DTranspose(3, 1) on one pixel [1, 10] with the
    // kernel [1, 1, 3, 2] = 0..6: filter f is k[f, 0] + 10 k[f, 1].
    let op = Op::ConvTranspose2d {
        filters: 3,
        kernel: [1, 1],
        stride: [1, 1],
        padding: Padding::Valid,
        output_padding: None,
        dilation: [1, 1],
        bias: true,
    };
    let x = t(&[1, 1, 1, 2], &[1., 10.]);
    let kernel = t(&[1, 1, 3, 2], &[0., 1., 2., 3., 4., 5.]);
    let bias = t(&[3], &[0.5, 0., -1.]);
    let out = forward(&op, &[&x], &[&kernel, &bias], false);
    assert_close(&out, &[1, 1, 1, 3], &[10.5, 32., 53.]);
}

#[test]
fn nearest_upsampling_repeats_each_pixel_over_its_block() {
    let op = Op::Upsample {
        factor: [2, 3],
        mode: Interpolation::Nearest,
    };
    let x = t(&[1, 2, 2, 1], &[1., 2., 3., 4.]);
    let out = forward(&op, &[&x], &[], false);
    let row = |a, b| [a, a, a, b, b, b];
    let expected: Vec<f64> = [row(1., 2.), row(1., 2.), row(3., 4.), row(3., 4.)].concat();
    assert_close(&out, &[1, 4, 6, 1], &expected);
    // Its gradient sums each block.
    let dy = t(
        &[1, 4, 6, 1],
        &(0..24).map(|v| v as f32).collect::<Vec<_>>(),
    );
    let dx = reference::upsample_grad(&[1, 2, 2, 1], &dy, [2, 3], Interpolation::Nearest);
    let block = |r: usize, c: usize| -> f64 {
        (0..2)
            .flat_map(|i| (0..3).map(move |j| ((2 * r + i) * 6 + 3 * c + j) as f64))
            .sum()
    };
    assert_close(
        &dx,
        &[1, 2, 2, 1],
        &[block(0, 0), block(0, 1), block(1, 0), block(1, 1)],
    );
}

#[test]
fn bilinear_upsampling_matches_tensorflow() {
    // From TensorFlow: keras.layers.UpSampling2D(2, interpolation="bilinear")
    // on [[0, 1, 2], [3, 4, 5]]. By hand, with half-pixel centres output
    // column 1 samples 0.25 of the way from pixel 0 to pixel 1, output row
    // 0 samples -0.25, clamped to row 0: 0.25.
    let op = Op::Upsample {
        factor: [2, 2],
        mode: Interpolation::Bilinear,
    };
    let x = t(&[1, 2, 3, 1], &[0., 1., 2., 3., 4., 5.]);
    let out = forward(&op, &[&x], &[], false);
    assert_close(
        &out,
        &[1, 4, 6, 1],
        &[
            0., 0.25, 0.75, 1.25, 1.75, 2., //
            0.75, 1., 1.5, 2., 2.5, 2.75, //
            2.25, 2.5, 3., 3.5, 4., 4.25, //
            3., 3.25, 3.75, 4.25, 4.75, 5.,
        ],
    );
    // From TensorFlow: a factor of 3 across (1/3 steps) and 1 down.
    let op = Op::Upsample {
        factor: [1, 3],
        mode: Interpolation::Bilinear,
    };
    let out = forward(&op, &[&x], &[], false);
    let third = 1. / 3.;
    assert_close(
        &out,
        &[1, 2, 9, 1],
        &[
            0.,
            0.,
            third,
            2. * third,
            1.,
            1. + third,
            1. + 2. * third,
            2.,
            2., //
            3.,
            3.,
            3. + third,
            3. + 2. * third,
            4.,
            4. + third,
            4. + 2. * third,
            5.,
            5.,
        ],
    );
}

#[test]
fn the_bilinear_gradient_is_the_transpose_of_the_interpolation() {
    // <upsample(x), dy> = <x, upsample_grad(dy)> for any x and dy.
    let x = ramp(&[2, 3, 2, 2], 1);
    let dy = ramp(&[2, 6, 6, 2], 2);
    for mode in [Interpolation::Nearest, Interpolation::Bilinear] {
        let y = reference::upsample(&x, [2, 3], mode);
        let dx = reference::upsample_grad(&[2, 3, 2, 2], &dy, [2, 3], mode);
        let dot = |a: &ArrayD<f32>, b: &ArrayD<f32>| -> f64 {
            a.iter()
                .zip(b)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum()
        };
        let (left, right) = (dot(&y, &dy), dot(&x, &dx));
        assert!((left - right).abs() < 1e-5, "{mode:?}: {left} vs {right}");
    }
}
