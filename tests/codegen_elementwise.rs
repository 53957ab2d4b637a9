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
