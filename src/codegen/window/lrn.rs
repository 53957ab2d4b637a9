//! Local response normalization across channels, forward and backward
//! (`tf.nn.local_response_normalization`).
//!
//! With `d_c = bias + alpha * sum_{|j - c| <= r} x_j^2` (over channels
//! inside `[0, C)`), the forward is `y_c = x_c * d_c^-beta`, and the
//! vector-Jacobian product is
//!
//! ```text
//! dx_i = dy_i * d_i^-beta - 2 alpha beta x_i * sum_{|j - i| <= r} dy_j x_j d_j^(-beta - 1)
//! ```
//!
//! (`dy_j/dx_i = [i = j] d_j^-beta - beta x_j d_j^(-beta-1) * 2 alpha x_i`
//! for `|i - j| <= r`). Both window sums run over a zero-padded scratch
//! copy on the stack, so every channel reads `2r + 1` neighbours without
//! bounds checks.

use cranelift_codegen::ir::{InstBuilder, Type, Value};

use super::super::math;
use super::emit::Emitter;
use super::{Image, Lrn};

/// LRN forward. Buffers `x, y`; work item `p` writes pixel `p` (of all
/// `N * H * W`).
pub(super) fn forward(e: &mut Emitter, image: Image, lrn: &Lrn) {
    let (x, y) = (e.buffer(0), e.buffer(1));
    let squares = padded_scratch(e, image.c, lrn.radius);
    e.for_items(|e, item| {
        let x_pixel = e.scaled(x, item, image.pixel_bytes());
        let y_pixel = e.scaled(y, item, image.pixel_bytes());
        store_squares(e, image.c, lrn.radius, x_pixel, squares);
        e.over_lanes(image.c, |e, ty, lane| {
            let window = e.add(squares, lane);
            let sum = window_sum(e, ty, window, 2 * lrn.radius + 1);
            let d = denominator(e, ty, lrn, sum);
            let scale = pow_negative(e, ty, d, lrn.beta);
            let x_at = e.add(x_pixel, lane);
            let value = e.load(ty, x_at, 0);
            let value = e.b.ins().fmul(value, scale);
            let y_at = e.add(y_pixel, lane);
            e.store(value, y_at, 0);
        });
    });
}

/// LRN backward. Buffers `x, dy, dx`; work item `p` writes pixel `p` of `dx`.
pub(super) fn backward(e: &mut Emitter, image: Image, lrn: &Lrn) {
    let (x, dy, dx) = (e.buffer(0), e.buffer(1), e.buffer(2));
    let r = lrn.radius;
    let squares = padded_scratch(e, image.c, r);
    // t_j = dy_j x_j d_j^(-beta-1), zero-padded like the squares.
    let terms = padded_scratch(e, image.c, r);
    e.for_items(|e, item| {
        let [x_pixel, dy_pixel, dx_pixel] =
            [x, dy, dx].map(|b| e.scaled(b, item, image.pixel_bytes()));
        store_squares(e, image.c, r, x_pixel, squares);
        e.over_lanes(image.c, |e, ty, lane| {
            let window = e.add(squares, lane);
            let sum = window_sum(e, ty, window, 2 * r + 1);
            let d = denominator(e, ty, lrn, sum);
            let scale = pow_negative(e, ty, d, lrn.beta);
            let [x_at, dy_at, dx_at] = [x_pixel, dy_pixel, dx_pixel].map(|p| e.add(p, lane));
            let (xv, gy) = (e.load(ty, x_at, 0), e.load(ty, dy_at, 0));
            let direct = e.b.ins().fmul(gy, scale);
            e.store(direct, dx_at, 0);
            let term = e.b.ins().fmul(gy, xv);
            let term = e.b.ins().fmul(term, scale);
            let term = e.b.ins().fdiv(term, d);
            let t_at = e.add(terms, lane);
            e.store(term, t_at, r as i64 * 4);
        });
        let factor = (-2.0 * lrn.alpha * lrn.beta) as f32;
        e.over_lanes(image.c, |e, ty, lane| {
            let window = e.add(terms, lane);
            let sum = window_sum(e, ty, window, 2 * r + 1);
            let [x_at, dx_at] = [x_pixel, dx_pixel].map(|p| e.add(p, lane));
            let (xv, direct) = (e.load(ty, x_at, 0), e.load(ty, dx_at, 0));
            let factor = e.constant(ty, factor);
            let weight = e.b.ins().fmul(factor, xv);
            let value = e.fma(weight, sum, direct);
            e.store(value, dx_at, 0);
        });
    });
}

/// A stack array of `radius + channels + radius` f32s whose `radius` pads at
/// each end are zero; returns its address.
fn padded_scratch(e: &mut Emitter, channels: usize, radius: usize) -> Value {
    let scratch = e.scratch(channels + 2 * radius);
    e.zero(scratch, radius);
    let after = e.offset(scratch, (radius + channels) as i64 * 4);
    e.zero(after, radius);
    scratch
}

/// `squares[radius + c] = x_c^2` for every channel of the pixel.
fn store_squares(e: &mut Emitter, channels: usize, radius: usize, x_pixel: Value, squares: Value) {
    e.over_lanes(channels, |e, ty, lane| {
        let x_at = e.add(x_pixel, lane);
        let value = e.load(ty, x_at, 0);
        let square = e.b.ins().fmul(value, value);
        let to = e.add(squares, lane);
        e.store(square, to, radius as i64 * 4);
    });
}

/// The sum of `count` consecutive f32s (or vectors of them, one f32 apart)
/// from `from`, in order.
fn window_sum(e: &mut Emitter, ty: Type, from: Value, count: usize) -> Value {
    // Short windows (AlexNet's r = 2 or 5) are unrolled; long ones loop.
    const UNROLLED: usize = 16;
    if count <= UNROLLED {
        let mut sum = e.load(ty, from, 0);
        for j in 1..count {
            let value = e.load(ty, from, j as i64 * 4);
            sum = e.b.ins().fadd(sum, value);
        }
        return sum;
    }
    let zero = e.constant(ty, 0.0);
    let sum = e.var(ty, zero);
    let (start, end) = (e.int(0), e.int(count as i64 * 4));
    e.for_range(start, end, 4, |e, offset| {
        let at = e.add(from, offset);
        let value = e.load(ty, at, 0);
        let acc = e.get(sum);
        let acc = e.b.ins().fadd(acc, value);
        e.set(sum, acc);
    });
    e.get(sum)
}

/// `bias + alpha * sum`.
fn denominator(e: &mut Emitter, ty: Type, lrn: &Lrn, sum: Value) -> Value {
    let alpha = e.constant(ty, lrn.alpha as f32);
    let bias = e.constant(ty, lrn.bias as f32);
    e.fma(alpha, sum, bias)
}

/// `d^-beta` for positive `d`: square roots for AlexNet's 0.75 and the
/// other common exponents, `exp(-beta ln d)` in general.
fn pow_negative(e: &mut Emitter, ty: Type, d: Value, beta: f64) -> Value {
    let one = e.constant(ty, 1.0);
    let b = &mut e.b;
    match beta {
        0.0 => one,
        0.5 => {
            let root = b.ins().sqrt(d);
            b.ins().fdiv(one, root)
        }
        0.75 => {
            let root = b.ins().sqrt(d);
            let fourth_root = b.ins().sqrt(root);
            let power = b.ins().fmul(root, fourth_root);
            b.ins().fdiv(one, power)
        }
        1.0 => b.ins().fdiv(one, d),
        _ => {
            let log = math::log(b, ty, d);
            let exponent = math::constant(b, ty, -beta as f32);
            let product = b.ins().fmul(log, exponent);
            math::exp(b, ty, product)
        }
    }
}
