//! Transcendental functions as Cranelift IR, for `f32` and `f32x4` alike.
//!
//! Cranelift has no `exp`; calling libm per element would cost a call per
//! lane. These are the classic range reduction plus a minimax polynomial
//! (Cephes' `expf` coefficients), accurate to a few ulp, written with `fma`.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// `x` as a constant of type `ty` (splatted for vectors).
pub fn constant(b: &mut FunctionBuilder, ty: Type, x: f32) -> Value {
    let scalar = b.ins().f32const(x);
    if ty.is_vector() {
        b.ins().splat(ty, scalar)
    } else {
        scalar
    }
}

/// `x` where `mask` holds, else `y`; `mask` is a comparison result of `ty`.
pub fn select(b: &mut FunctionBuilder, ty: Type, mask: Value, x: Value, y: Value) -> Value {
    if ty.is_vector() {
        // A vector comparison yields all-ones or all-zeros lanes of an integer
        // vector; reinterpret them as the float lanes to choose between.
        let mask = b.ins().bitcast(ty, MemFlagsData::new(), mask);
        b.ins().bitselect(mask, x, y)
    } else {
        b.ins().select(mask, x, y)
    }
}

fn int_type(ty: Type) -> Type {
    if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    }
}

fn horner(b: &mut FunctionBuilder, ty: Type, x: Value, coefficients: &[f32]) -> Value {
    let mut p = constant(b, ty, coefficients[0]);
    for &c in &coefficients[1..] {
        let c = constant(b, ty, c);
        p = b.ins().fma(p, x, c);
    }
    p
}

/// `e^x`. Inputs are clamped to [-87, 88], where the result is a normal float.
pub fn exp(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    let lo = constant(b, ty, -87.0);
    let hi = constant(b, ty, 88.0);
    let x = b.ins().fmax(x, lo);
    let x = b.ins().fmin(x, hi);
    // x = k ln 2 + r with |r| <= ln 2 / 2; ln 2 split in two for precision.
    let log2e = constant(b, ty, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let k = b.ins().nearest(t);
    let ln2_hi = constant(b, ty, -0.693_359_4);
    let ln2_lo = constant(b, ty, 2.121_944_4e-4);
    let r = b.ins().fma(k, ln2_hi, x);
    let r = b.ins().fma(k, ln2_lo, r);
    let p = horner(
        b,
        ty,
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ],
    );
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fma(p, r2, r);
    let one = constant(b, ty, 1.0);
    let y = b.ins().fadd(y, one);
    // 2^k, built from its exponent bits.
    let int = int_type(ty);
    let ki = b.ins().fcvt_to_sint_sat(int, k);
    let bias = b.ins().iconst(types::I32, 127);
    let bias = if ty.is_vector() {
        b.ins().splat(int, bias)
    } else {
        bias
    };
    let biased = b.ins().iadd(ki, bias);
    let bits = b.ins().ishl_imm_u(biased, 23);
    let scale = b.ins().bitcast(ty, MemFlagsData::new(), bits);
    b.ins().fmul(y, scale)
}

/// `e^x - 1`, accurate for small `x` (where `exp(x) - 1` cancels).
pub fn expm1(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    // Taylor series to x^8 / 8! for |x| < 0.5: error below 3e-8 relative.
    let series = horner(
        b,
        ty,
        x,
        &[
            1.0 / 40320.0,
            1.0 / 5040.0,
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
        ],
    );
    let small = b.ins().fmul(series, x);
    let e = exp(b, ty, x);
    let one = constant(b, ty, 1.0);
    let large = b.ins().fsub(e, one);
    let magnitude = b.ins().fabs(x);
    let half = constant(b, ty, 0.5);
    let is_small = b.ins().fcmp(FloatCC::LessThan, magnitude, half);
    select(b, ty, is_small, small, large)
}

/// `tanh(x)`.
pub fn tanh(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    // Below 0.35, the odd Taylor series to x^11 (the next term is under 1e-8
    // relative); elsewhere 1 - 2 / (e^2|x| + 1) with the sign of x, whose
    // cancellation costs at most a factor 3 there.
    let x2 = b.ins().fmul(x, x);
    let series = horner(
        b,
        ty,
        x2,
        &[
            -1382.0 / 155_925.0,
            62.0 / 2835.0,
            -17.0 / 315.0,
            2.0 / 15.0,
            -1.0 / 3.0,
            1.0,
        ],
    );
    let small = b.ins().fmul(series, x);
    let magnitude = b.ins().fabs(x);
    let twice = b.ins().fadd(magnitude, magnitude);
    let e = exp(b, ty, twice);
    let one = constant(b, ty, 1.0);
    let two = constant(b, ty, 2.0);
    let denominator = b.ins().fadd(e, one);
    let fraction = b.ins().fdiv(two, denominator);
    let large = b.ins().fsub(one, fraction);
    let large = with_sign_of(b, ty, large, x);
    let limit = constant(b, ty, 0.35);
    let is_small = b.ins().fcmp(FloatCC::LessThan, magnitude, limit);
    select(b, ty, is_small, small, large)
}

/// The non-negative `magnitude` with the sign of `x` (an odd function's
/// value from its value at `|x|`).
fn with_sign_of(b: &mut FunctionBuilder, ty: Type, magnitude: Value, x: Value) -> Value {
    // x64 has no vector `fcopysign`: negate where x is negative.
    let zero = constant(b, ty, 0.0);
    let negative = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let flipped = b.ins().fneg(magnitude);
    select(b, ty, negative, flipped, magnitude)
}

/// `erf(x)`, to an absolute error below 2e-7 (GELU).
pub fn erf(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    // Below 0.5, the odd Maclaurin series to x^13 (the next term is under
    // 1e-9); elsewhere Abramowitz and Stegun's 7.1.26,
    // 1 - t (a1 + a2 t + ... + a5 t^4) e^(-x^2) with t = 1 / (1 + p |x|),
    // whose error is at most 1.5e-7, with the sign of x.
    let x2 = b.ins().fmul(x, x);
    // erf(x) = 2 / sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n + 1))
    let c = std::f32::consts::FRAC_2_SQRT_PI;
    let series = horner(
        b,
        ty,
        x2,
        &[
            c / 9360.0,
            -c / 1320.0,
            c / 216.0,
            -c / 42.0,
            c / 10.0,
            -c / 3.0,
            c,
        ],
    );
    let small = b.ins().fmul(series, x);
    let magnitude = b.ins().fabs(x);
    let one = constant(b, ty, 1.0);
    let p = constant(b, ty, 0.327_591_1);
    let denominator = b.ins().fma(p, magnitude, one);
    let t = b.ins().fdiv(one, denominator);
    let poly = horner(
        b,
        ty,
        t,
        &[
            1.061_405_4,
            -1.453_152,
            1.421_413_8,
            -0.284_496_74,
            0.254_829_6,
        ],
    );
    let poly = b.ins().fmul(poly, t);
    let minus_x2 = b.ins().fneg(x2);
    let gauss = exp(b, ty, minus_x2);
    let tail = b.ins().fmul(poly, gauss);
    let large = b.ins().fsub(one, tail);
    let large = with_sign_of(b, ty, large, x);
    let half = constant(b, ty, 0.5);
    let is_small = b.ins().fcmp(FloatCC::LessThan, magnitude, half);
    select(b, ty, is_small, small, large)
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    let minus = b.ins().fneg(x);
    let e = exp(b, ty, minus);
    let one = constant(b, ty, 1.0);
    let denominator = b.ins().fadd(one, e);
    b.ins().fdiv(one, denominator)
}

/// The natural logarithm of a positive, normal `x` (Cephes' `logf`:
/// `x = m 2^e` with `m` in [sqrt(1/2), sqrt(2)), then a polynomial in `m - 1`).
pub fn log(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    let int = int_type(ty);
    let splat_int = |b: &mut FunctionBuilder, v: i64| {
        let s = b.ins().iconst(types::I32, v);
        if ty.is_vector() {
            b.ins().splat(int, s)
        } else {
            s
        }
    };
    let bits = b.ins().bitcast(int, MemFlagsData::new(), x);
    // The exponent: bits 23..31, biased so that m lands in [0.5, 1).
    let shifted = b.ins().ushr_imm_u(bits, 23);
    let mask = splat_int(b, 0xff);
    let exponent_bits = b.ins().band(shifted, mask);
    let bias = splat_int(b, 126);
    let exponent = b.ins().isub(exponent_bits, bias);
    let mantissa_mask = splat_int(b, 0x807f_ffff);
    let half_bits = splat_int(b, 0x3f00_0000);
    let mantissa = b.ins().band(bits, mantissa_mask);
    let mantissa = b.ins().bor(mantissa, half_bits);
    let m = b.ins().bitcast(ty, MemFlagsData::new(), mantissa);
    let e = b.ins().fcvt_from_sint(ty, exponent);
    // Below sqrt(1/2), use 2m - 1 and e - 1, so that m - 1 stays small.
    let sqrt_half = constant(b, ty, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrt_half);
    let one = constant(b, ty, 1.0);
    let doubled = b.ins().fadd(m, m);
    let m_small = b.ins().fsub(doubled, one);
    let m_large = b.ins().fsub(m, one);
    let m = select(b, ty, small, m_small, m_large);
    let e_small = b.ins().fsub(e, one);
    let e = select(b, ty, small, e_small, e);
    let z = b.ins().fmul(m, m);
    let p = horner(
        b,
        ty,
        m,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let mz = b.ins().fmul(m, z);
    let y = b.ins().fmul(mz, p);
    let ln2_lo = constant(b, ty, -2.121_944_4e-4);
    let y = b.ins().fma(e, ln2_lo, y);
    let minus_half = constant(b, ty, -0.5);
    let y = b.ins().fma(z, minus_half, y);
    let x = b.ins().fadd(m, y);
    let ln2_hi = constant(b, ty, 0.693_359_4);
    b.ins().fma(e, ln2_hi, x)
}
