//! The Cranelift element-wise kernels against plain f64 arithmetic, on
//! odd row lengths (vector loop plus scalar tail) and partial row ranges.

use cnnc::codegen::elementwise::{Binary, Elementwise, Expr, Operand, Unary};
use cnnc::codegen::{CodegenError, Jit};

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

fn close(actual: f32, expected: f64, relative: f64) -> bool {
    let scale = expected.abs().max(1e-30);
    ((actual as f64) - expected).abs() <= relative * scale + 1e-37
}

/// Runs `kernel` over all rows of the given buffers; returns the outputs.
fn run(
    jit: &mut Jit,
    kernel: &Elementwise,
    inputs: &mut [Vec<f32>],
    rows: usize,
    channels: usize,
) -> Vec<Vec<f32>> {
    let compiled = jit.compile_elementwise(kernel).expect("kernel compiles");
    let mut outputs: Vec<Vec<f32>> = kernel
        .outputs
        .iter()
        .map(|_| vec![f32::NAN; rows * channels])
        .collect();
    let mut args: Vec<*mut f32> = inputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
    args.extend(outputs.iter_mut().map(|b| b.as_mut_ptr()));
    // SAFETY: one pointer per buffer, each as long as the kernel reads or writes.
    unsafe { compiled.run(&args, 0..rows, channels) };
    outputs
}

#[test]
fn bias_and_relu_broadcast_per_channel() {
    let (rows, channels) = (5, 7);
    let kernel = Elementwise {
        name: "bias_relu".into(),
        inputs: vec![Operand::Tensor, Operand::PerChannel],
        exprs: vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Binary(Binary::Add, 0, 1),
            Expr::Const(0.0),
            Expr::Binary(Binary::Max, 2, 3),
        ],
        outputs: vec![4],
        stores: Vec::new(),
    };
    let mut inputs = vec![
        data(rows * channels, 1, -1.0, 1.0),
        data(channels, 2, -0.5, 0.5),
    ];
    let out = run(
        &mut Jit::new().expect("jit"),
        &kernel,
        &mut inputs,
        rows,
        channels,
    );
    for r in 0..rows {
        for c in 0..channels {
            let expected = (inputs[0][r * channels + c] + inputs[1][c]).max(0.0);
            assert_eq!(out[0][r * channels + c], expected, "row {r} channel {c}");
        }
    }
}

/// A function, its f64 reference, and the input range to test it on.
type Case = (Unary, fn(f64) -> f64, f32, f32);

#[test]
fn transcendentals_match_f64() {
    let cases: [Case; 11] = [
        (Unary::Log, f64::ln, 1e-30, 1e30),
        (Unary::Log, f64::ln, 0.5, 2.0),
        (Unary::Exp, f64::exp, -80.0, 80.0),
        (Unary::Expm1, f64::exp_m1, -3.0, 3.0),
        (Unary::Tanh, f64::tanh, -9.0, 9.0),
        (Unary::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), -30.0, 30.0),
        (Unary::Sqrt, f64::sqrt, 0.0, 100.0),
        (Unary::Recip, |x| 1.0 / x, 0.5, 100.0),
        (Unary::Abs, f64::abs, -5.0, 5.0),
        (Unary::Erf, libm::erf, -5.0, 5.0),
        (Unary::Erf, libm::erf, -0.7, 0.7),
    ];
    let mut jit = Jit::new().expect("jit");
    for (i, (op, reference, lo, hi)) in cases.into_iter().enumerate() {
        let (rows, channels) = (3, 333);
        let mut x = data(rows * channels, 10 + i as u64, lo, hi);
        // Values near zero, where series and cancellation matter.
        x[0] = 1e-4;
        x[1] = if lo < 0.0 { -3e-3 } else { 3e-3 };
        x[2] = lo.max(-0.01).max(if lo < 0.0 { lo } else { 0.01 });
        let kernel = Elementwise {
            name: format!("{op:?}"),
            inputs: vec![Operand::Tensor],
            exprs: vec![Expr::Load(0), Expr::Unary(op, 0)],
            outputs: vec![1],
            stores: Vec::new(),
        };
        let out = run(&mut jit, &kernel, &mut [x.clone()], rows, channels);
        for (j, (&xj, &yj)) in x.iter().zip(&out[0]).enumerate() {
            let expected = reference(xj as f64);
            assert!(
                close(yj, expected, 2e-6),
                "{op:?}({xj}) = {yj}, expected {expected} (element {j})"
            );
        }
    }
}

#[test]
fn exp_saturates_instead_of_overflowing() {
    let kernel = Elementwise {
        name: "exp".into(),
        inputs: vec![Operand::Tensor],
        exprs: vec![
            Expr::Load(0),
            Expr::Unary(Unary::Exp, 0),
            Expr::Unary(Unary::Sigmoid, 0),
            Expr::Unary(Unary::Tanh, 0),
        ],
        outputs: vec![1, 2, 3],
        stores: Vec::new(),
    };
    let mut x = vec![vec![-1000.0, 1000.0, -90.0, 90.0, 0.0]];
    let out = run(&mut Jit::new().expect("jit"), &kernel, &mut x, 1, 5);
    assert!(
        out[0].iter().all(|v| v.is_finite() && *v >= 0.0),
        "{:?}",
        out[0]
    );
    assert!(out[0][0] < 1e-37 && out[0][1] > 1e38);
    // Inputs are clamped to [-87, 88]: sigmoid(-1000) is about 6e-39, not 0.
    assert!(out[1][0] < 1e-37, "{}", out[1][0]);
    assert_eq!(out[1][1], 1.0);
    assert_eq!(&out[2][..2], &[-1.0, 1.0]);
    assert_eq!(out[2][4], 0.0);
}

#[test]
fn select_fma_and_several_outputs() {
    // ReLU's gradient dy * 1[y > 0] and an ELU with alpha 1.5 in one kernel.
    let (rows, channels) = (4, 13);
    let kernel = Elementwise {
        name: "mixed".into(),
        inputs: vec![Operand::Tensor, Operand::Tensor],
        exprs: vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Const(0.0),
            Expr::IfPositive {
                cond: 0,
                then: 1,
                otherwise: 2,
            },
            Expr::Unary(Unary::Expm1, 0),
            Expr::Const(1.5),
            Expr::Binary(Binary::Mul, 4, 5),
            Expr::IfPositive {
                cond: 0,
                then: 0,
                otherwise: 6,
            },
            Expr::Fma(0, 1, 5),
        ],
        outputs: vec![3, 7, 8],
        stores: Vec::new(),
    };
    let mut inputs = vec![
        data(rows * channels, 3, -2.0, 2.0),
        data(rows * channels, 4, -1.0, 1.0),
    ];
    let out = run(
        &mut Jit::new().expect("jit"),
        &kernel,
        &mut inputs,
        rows,
        channels,
    );
    for i in 0..rows * channels {
        let (x, dy) = (inputs[0][i] as f64, inputs[1][i] as f64);
        assert_eq!(out[0][i] as f64, if x > 0.0 { dy } else { 0.0 });
        let elu = if x > 0.0 { x } else { 1.5 * x.exp_m1() };
        assert!(
            close(out[1][i], elu, 2e-6),
            "elu({x}) = {}, expected {elu}",
            out[1][i]
        );
        assert!(close(out[2][i], x.mul_add(dy, 1.5), 1e-6));
    }
}

#[test]
fn only_the_given_rows_are_written() {
    let (rows, channels) = (6, 5);
    let kernel = Elementwise {
        name: "double".into(),
        inputs: vec![Operand::Tensor],
        exprs: vec![Expr::Load(0), Expr::Binary(Binary::Add, 0, 0)],
        outputs: vec![1],
        stores: Vec::new(),
    };
    let mut jit = Jit::new().expect("jit");
    let compiled = jit.compile_elementwise(&kernel).expect("compiles");
    let mut x = data(rows * channels, 5, -1.0, 1.0);
    let mut y = vec![7.0f32; rows * channels];
    let args = [x.as_mut_ptr(), y.as_mut_ptr()];
    // SAFETY: both buffers hold rows * channels f32s.
    unsafe { compiled.run(&args, 2..4, channels) };
    for (i, &v) in y.iter().enumerate() {
        let row = i / channels;
        let expected = if (2..4).contains(&row) {
            2.0 * x[i]
        } else {
            7.0
        };
        assert_eq!(v, expected, "element {i}");
    }
    assert!(
        compiled.clif.contains("fma") || compiled.clif.contains("fadd"),
        "{}",
        compiled.clif
    );
}

#[test]
fn malformed_kernels_are_errors() {
    let mut jit = Jit::new().expect("jit");
    let forward_reference = Elementwise {
        name: "bad".into(),
        inputs: vec![Operand::Tensor],
        exprs: vec![Expr::Binary(Binary::Add, 0, 1), Expr::Load(0)],
        outputs: vec![0],
        stores: Vec::new(),
    };
    assert!(matches!(
        jit.compile_elementwise(&forward_reference),
        Err(CodegenError::Malformed { .. })
    ));
    let missing_input = Elementwise {
        name: "bad".into(),
        inputs: vec![],
        exprs: vec![Expr::Load(0)],
        outputs: vec![0],
        stores: Vec::new(),
    };
    let err = jit
        .compile_elementwise(&missing_input)
        .err()
        .expect("an error");
    assert!(err.to_string().contains("loads input 0"), "{err}");
    let no_output = Elementwise {
        name: "bad".into(),
        inputs: vec![Operand::Tensor],
        exprs: vec![Expr::Load(0)],
        outputs: vec![],
        stores: Vec::new(),
    };
    assert!(jit.compile_elementwise(&no_output).is_err());
}

#[test]
fn per_item_operands_broadcast_over_each_items_rows() {
    // An SE-block's recalibration: x [2 items x 3 rows, 5 channels] * s [2, 5].
    let (items, rows_per_item, channels) = (2, 3, 5);
    let kernel = Elementwise {
        name: "se_scale".into(),
        inputs: vec![Operand::Tensor, Operand::PerItem { rows_per_item }],
        exprs: vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Binary(Binary::Mul, 0, 1),
        ],
        outputs: vec![2],
        stores: Vec::new(),
    };
    let rows = items * rows_per_item;
    let mut inputs = vec![
        data(rows * channels, 6, -1.0, 1.0),
        data(items * channels, 7, 0.0, 1.0),
    ];
    let out = run(
        &mut Jit::new().expect("jit"),
        &kernel,
        &mut inputs,
        rows,
        channels,
    );
    for r in 0..rows {
        for c in 0..channels {
            let expected =
                inputs[0][r * channels + c] * inputs[1][(r / rows_per_item) * channels + c];
            assert_eq!(out[0][r * channels + c], expected, "row {r} channel {c}");
        }
    }
}

/// `values` as bf16 words two to an f32 slot (value `i` at byte `2i`), as
/// a bf16 buffer holds them; an odd count leaves the last slot's upper
/// half zero.
fn bf16_slots(values: &[u16]) -> Vec<f32> {
    values
        .chunks(2)
        .map(|pair| {
            let high = pair.get(1).copied().unwrap_or(0);
            f32::from_bits(u32::from(pair[0]) | (u32::from(high) << 16))
        })
        .collect()
}

/// The bf16 words of a bf16 buffer's slots.
fn bf16_words(slots: &[f32]) -> Vec<u16> {
    slots
        .iter()
        .flat_map(|s| [s.to_bits() as u16, (s.to_bits() >> 16) as u16])
        .collect()
}

/// A bf16 input is read exactly (its bits the upper half of an f32's); a
/// bf16 output is rounded as the bf16 products' packing rounds (to the
/// nearest, ties to even; NaN stays a quiet NaN, subnormals become zeros
/// of their sign), through the vector loop and the scalar tail, beside
/// f32 operands, and writes only its rows' values.
#[test]
fn bf16_tensors_load_exactly_and_store_rounded() {
    use cnnc::codegen::contraction::bf16::{round, widen};
    use cnnc::codegen::Storage;
    let (rows, channels) = (4, 7);
    let n = rows * channels;
    let special = [
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        -(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE / 3.0,
        -f32::MIN_POSITIVE / 5.0,
        f32::MIN_POSITIVE,
        f32::from_bits(0x7f80_0001),
        f32::NAN,
        -0.0,
        0.1,
    ];
    let mut x = data(n, 11, -3.0, 3.0);
    for (i, &s) in special.iter().enumerate() {
        x[(5 * i) % n] = s;
    }
    let h: Vec<u16> = data(n, 12, -2.0, 2.0).into_iter().map(round).collect();
    let kernel = Elementwise {
        name: "bf16".into(),
        inputs: vec![Operand::Tensor, Operand::Bf16],
        exprs: vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Binary(Binary::Mul, 0, 1),
        ],
        outputs: vec![0, 2, 1],
        stores: vec![Storage::Bf16, Storage::Bf16, Storage::F32],
    };
    let mut jit = Jit::new().expect("jit");
    let compiled = jit.compile_elementwise(&kernel).expect("compiles");
    for written in [0..rows, 1..3] {
        let mut inputs = [x.clone(), bf16_slots(&h)];
        let sentinel = f32::from_bits(0x5a5a_5a5a);
        let mut outputs = [vec![sentinel; n], vec![sentinel; n], vec![sentinel; n]];
        let mut args: Vec<*mut f32> = inputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        args.extend(outputs.iter_mut().map(|b| b.as_mut_ptr()));
        // SAFETY: every buffer holds at least the values of `rows` rows.
        unsafe { compiled.run(&args, written.clone(), channels) };
        let [rounded, product, widened] = &outputs;
        let (rounded, product) = (bf16_words(rounded), bf16_words(product));
        for i in 0..2 * n {
            let inside = i < n && written.contains(&(i / channels));
            let x_bits = |v: u16| if inside { v } else { 0x5a5a };
            assert_eq!(
                rounded[i],
                x_bits(round(x.get(i).copied().unwrap_or(0.0))),
                "x {i}: {}",
                x.get(i).copied().unwrap_or(0.0)
            );
            let expected = x.get(i).map_or(0.0, |&x| x * widen(h[i]));
            assert_eq!(product[i], x_bits(round(expected)), "x h {i}");
        }
        for (i, &v) in widened.iter().enumerate() {
            let expected = if written.contains(&(i / channels)) {
                widen(h[i])
            } else {
                sentinel
            };
            assert_eq!(v.to_bits(), expected.to_bits(), "h {i}");
        }
    }
}
