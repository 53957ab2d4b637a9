//! Reduction kernels (softmax, its gradient, cross-entropy, column
//! statistics) against the reference implementation and finite differences.

#[path = "support/reference.rs"]
mod reference;

use cnnc::codegen::contraction::bf16::{round, widen};
use cnnc::codegen::reduce::{Reduce, ReduceKind};
use cnnc::codegen::{CodegenError, DomainKernel, Jit, Storage};
use ndarray::ArrayD;

fn data(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn compile(kind: ReduceKind, rows: usize, n: usize) -> (Jit, DomainKernel) {
    let mut jit = Jit::new().expect("jit");
    let kernel = jit
        .compile_reduce(&Reduce {
            name: format!("{kind:?}"),
            kind,
            rows,
            n,
            loads: Vec::new(),
        })
        .expect("compiles");
    (jit, kernel)
}

/// Runs the kernel over its whole domain, or split in three uneven parts.
fn run(kernel: &DomainKernel, buffers: &mut [Vec<f32>], split: bool) {
    let args: Vec<*mut f32> = buffers.iter_mut().map(|b| b.as_mut_ptr()).collect();
    let d = kernel.domain;
    let parts: Vec<std::ops::Range<usize>> = if split {
        vec![0..d / 3, d / 3..d / 3 + 1, d / 3 + 1..d]
    } else {
        std::iter::once(0..d).collect()
    };
    for part in parts {
        // SAFETY: every buffer is as large as the kernel's description says.
        unsafe { kernel.run(&args, part) };
    }
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance * e.abs().max(1e-2),
            "{what}[{i}] = {a}, expected {e}"
        );
    }
}

#[test]
fn softmax_matches_the_reference() {
    for (rows, n) in [(7, 10), (3, 1), (5, 1000), (2, 7)] {
        let (_jit, kernel) = compile(ReduceKind::Softmax, rows, n);
        let x = data(rows * n, n as u64, -20.0, 20.0);
        let mut buffers = vec![x.clone(), vec![0.0; rows * n]];
        run(&kernel, &mut buffers, false);
        let expected =
            reference::softmax(&ArrayD::from_shape_vec(vec![rows, n], x).expect("shape"));
        assert_close(
            &buffers[1],
            expected.as_slice().expect("contiguous"),
            1e-5,
            "softmax",
        );
    }
}

#[test]
fn softmax_backward_is_the_vector_jacobian_product() {
    let (rows, n) = (3, 9);
    let (_jit, kernel) = compile(ReduceKind::SoftmaxBackward, rows, n);
    let x = data(rows * n, 1, -3.0, 3.0);
    let y = reference::softmax(&ArrayD::from_shape_vec(vec![rows, n], x).expect("shape"))
        .into_raw_vec_and_offset()
        .0;
    let dy = data(rows * n, 2, -1.0, 1.0);
    let mut buffers = vec![y.clone(), dy.clone(), vec![0.0; rows * n]];
    run(&kernel, &mut buffers, false);
    // J = diag(y) - y yᵀ per row, so (Jᵀ dy)_i = y_i dy_i - y_i sum_j y_j dy_j.
    for r in 0..rows {
        let row = r * n..(r + 1) * n;
        let dot: f64 = y[row.clone()]
            .iter()
            .zip(&dy[row.clone()])
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        for i in row {
            let expected = (f64::from(y[i]) * (f64::from(dy[i]) - dot)) as f32;
            assert!(
                (buffers[2][i] - expected).abs() < 1e-6,
                "dx[{i}] = {}, expected {expected}",
                buffers[2][i]
            );
        }
    }
}

#[test]
fn cross_entropy_loss_and_gradient() {
    for smoothing in [0.0f32, 0.1] {
        let (rows, n) = (7, 10);
        let scale = 1.0 / rows as f32;
        let (_jit, kernel) = compile(ReduceKind::CrossEntropy { smoothing, scale }, rows, n);
        let z = data(rows * n, 3, -5.0, 5.0);
        let labels: Vec<usize> = (0..rows).map(|r| (r * 3) % n).collect();
        let mut buffers = vec![
            z.clone(),
            labels.iter().map(|&l| l as f32).collect(),
            vec![0.0; rows],
            vec![0.0; rows * n],
        ];
        run(&kernel, &mut buffers, true);
        let logits = |z: &[f32]| ArrayD::from_shape_vec(vec![rows, n], z.to_vec()).expect("shape");
        let loss = buffers[2].iter().sum::<f32>() / rows as f32;
        let expected =
            reference::sparse_categorical_crossentropy(&logits(&z), &labels, true, smoothing);
        assert!(
            (loss - expected).abs() < 1e-5 * expected.abs().max(1.0),
            "loss {loss}, expected {expected}"
        );
        // The gradient of the mean loss by central differences of the reference.
        for i in [0, 5, 13, 31, 69] {
            let h = 1e-2;
            let (mut up, mut down) = (z.clone(), z.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (reference::sparse_categorical_crossentropy(
                &logits(&up),
                &labels,
                true,
                smoothing,
            ) - reference::sparse_categorical_crossentropy(
                &logits(&down),
                &labels,
                true,
                smoothing,
            )) / (2.0 * h);
            assert!(
                (buffers[3][i] - numeric).abs() < 2e-3 * numeric.abs().max(0.05),
                "dz[{i}] = {}, numeric {numeric}",
                buffers[3][i]
            );
        }
    }
}

#[test]
fn one_score_rows_get_the_binary_cross_entropy_of_their_logit() {
    // Rows of one score are a sigmoid's logits: loss and gradient against
    // the reference (without smoothing), in f64, on logits up to +-40 where
    // a naive log(sigmoid) overflows; with smoothing, labels move to
    // (1 - s) t + s / 2 as Keras's BinaryCrossentropy smooths them.
    let rows = 9;
    let z: Vec<f32> = vec![-40.0, -3.0, -0.5, 0.0, 0.25, 2.0, 7.5, 40.0, 1.0];
    let labels: Vec<usize> = vec![1, 0, 1, 0, 1, 1, 0, 0, 1];
    for smoothing in [0.0f32, 0.2] {
        let scale = 0.5;
        let (_jit, kernel) = compile(ReduceKind::CrossEntropy { smoothing, scale }, rows, 1);
        let mut buffers = vec![
            z.clone(),
            labels.iter().map(|&l| l as f32).collect(),
            vec![0.0; rows],
            vec![0.0; rows],
        ];
        run(&kernel, &mut buffers, true);
        for r in 0..rows {
            let (zf, t) = (
                f64::from(z[r]),
                (labels[r] as f64) * (1.0 - f64::from(smoothing)) + f64::from(smoothing) / 2.0,
            );
            let p = 1.0 / (1.0 + (-zf).exp());
            // -t log p - (1 - t) log(1 - p), written stably.
            let loss = zf.max(0.0) - zf * t + (-zf.abs()).exp().ln_1p();
            let dz = (p - t) * f64::from(scale);
            assert!(
                (f64::from(buffers[2][r]) - loss).abs() < 1e-5 * loss.max(1.0),
                "row {r}: loss {} vs {loss}",
                buffers[2][r]
            );
            assert!(
                (f64::from(buffers[3][r]) - dz).abs() < 1e-6,
                "row {r}: dz {} vs {dz}",
                buffers[3][r]
            );
        }
        if smoothing == 0.0 {
            let logits = ArrayD::from_shape_vec(vec![rows, 1], z.clone()).expect("shape");
            let mean = buffers[2].iter().map(|&l| f64::from(l)).sum::<f64>() / rows as f64;
            let expected = f64::from(reference::binary_crossentropy_from_logits(&logits, &labels));
            assert!(
                (mean - expected).abs() < 1e-5 * expected,
                "{mean} vs {expected}"
            );
        }
    }
    // A label that is not 0 or 1 makes its row's loss NaN.
    let (_jit, kernel) = compile(
        ReduceKind::CrossEntropy {
            smoothing: 0.0,
            scale: 1.0,
        },
        4,
        1,
    );
    let mut buffers = vec![
        vec![0.5; 4],
        vec![2.0, -1.0, f32::NAN, 1.0],
        vec![0.0; 4],
        vec![0.0; 4],
    ];
    run(&kernel, &mut buffers, false);
    assert!(
        buffers[2][..3].iter().all(|l| l.is_nan()) && buffers[2][3].is_finite(),
        "{:?}",
        buffers[2]
    );
}

#[test]
fn cross_entropy_keeps_any_label_inside_its_row_and_flags_it() {
    // The executor runs whatever buffers it is given, so the kernel itself
    // must stay inside each row whatever the label: NaN, -1, 4e9, 2.5 and n
    // are clamped to columns 0, 0, 3, 2 and 3, and their rows' losses are
    // NaN. Each row must then be exactly the row of a clean run with the
    // clamped labels: a write outside a row would change its neighbour.
    let (rows, n) = (6, 4);
    let (_jit, kernel) = compile(
        ReduceKind::CrossEntropy {
            smoothing: 0.1,
            scale: 0.5,
        },
        rows,
        n,
    );
    let z = data(rows * n, 5, -3.0, 3.0);
    let buffers = |labels: &[f32]| {
        vec![
            z.clone(),
            labels.to_vec(),
            vec![0.0; rows],
            vec![0.0; rows * n],
        ]
    };
    let mut bad = buffers(&[f32::NAN, -1.0, 4e9, 2.5, n as f32, 1.0]);
    let mut clean = buffers(&[0.0, 0.0, 3.0, 2.0, 3.0, 1.0]);
    run(&kernel, &mut bad, true);
    run(&kernel, &mut clean, false);
    assert_eq!(
        bad[3], clean[3],
        "the gradients differ from the clamped labels'"
    );
    for row in 0..rows - 1 {
        assert!(bad[2][row].is_nan(), "row {row}: loss {}", bad[2][row]);
        assert!(clean[2][row].is_finite(), "row {row}: {}", clean[2][row]);
    }
    assert_eq!(bad[2][rows - 1], clean[2][rows - 1]);
}

#[test]
fn column_moments_match_the_reference_and_do_not_depend_on_the_split() {
    for (rows, n) in [(7 * 25, 13), (32 * 49, 64), (1, 3)] {
        let (_jit, kernel) = compile(ReduceKind::ColumnMoments, rows, n);
        let x = data(rows * n, 4, 2.0, 5.0);
        let mut whole = vec![x.clone(), vec![0.0; n], vec![0.0; n]];
        let mut split = whole.clone();
        run(&kernel, &mut whole, false);
        run(&kernel, &mut split, true);
        assert_eq!(whole, split, "splitting the domain changed the result");
        let (mean, variance) =
            reference::batchnorm_moments(&ArrayD::from_shape_vec(vec![rows, n], x).expect("shape"));
        assert_close(
            &whole[1],
            mean.as_slice().expect("contiguous"),
            1e-5,
            "mean",
        );
        assert_close(
            &whole[2],
            variance.as_slice().expect("contiguous"),
            1e-4,
            "variance",
        );
    }
}

#[test]
fn column_sums() {
    let (rows, n) = (50, 21);
    let (_jit, kernel) = compile(ReduceKind::ColumnSums, rows, n);
    let a = data(rows * n, 5, -1.0, 1.0);
    let b = data(rows * n, 6, -1.0, 1.0);
    let mut buffers = vec![a.clone(), b.clone(), vec![0.0; n], vec![0.0; n]];
    run(&kernel, &mut buffers, true);
    for c in 0..n {
        let sum: f64 = (0..rows).map(|r| f64::from(a[r * n + c])).sum();
        let dot: f64 = (0..rows)
            .map(|r| f64::from(a[r * n + c]) * f64::from(b[r * n + c]))
            .sum();
        assert!((f64::from(buffers[2][c]) - sum).abs() < 1e-4, "sum[{c}]");
        assert!((f64::from(buffers[3][c]) - dot).abs() < 1e-4, "dot[{c}]");
    }
}

#[test]
fn bad_descriptions_are_errors() {
    let mut jit = Jit::new().expect("jit");
    let empty = Reduce {
        name: "empty".into(),
        kind: ReduceKind::Softmax,
        rows: 0,
        n: 10,
        loads: Vec::new(),
    };
    assert!(jit.compile_reduce(&empty).is_err());
    let smoothing = Reduce {
        name: "ls".into(),
        kind: ReduceKind::CrossEntropy {
            smoothing: 1.0,
            scale: 1.0,
        },
        rows: 1,
        n: 10,
        loads: Vec::new(),
    };
    assert!(jit.compile_reduce(&smoothing).is_err());
}

#[test]
fn item_sums_reduce_each_items_rows_separately() {
    // The SE-block's gradient of its channel weights: per image, per channel.
    let (items, rows_per_item, n) = (3, 49, 37);
    let rows = items * rows_per_item;
    let (_jit, kernel) = compile(ReduceKind::ItemSums { rows_per_item }, rows, n);
    let a = data(rows * n, 8, -1.0, 1.0);
    let b = data(rows * n, 9, -1.0, 1.0);
    let mut whole = vec![
        a.clone(),
        b.clone(),
        vec![0.0; items * n],
        vec![0.0; items * n],
    ];
    let mut split = whole.clone();
    run(&kernel, &mut whole, false);
    run(&kernel, &mut split, true);
    assert_eq!(whole, split);
    for item in 0..items {
        for c in 0..n {
            let rows = item * rows_per_item..(item + 1) * rows_per_item;
            let sum: f64 = rows.clone().map(|r| f64::from(a[r * n + c])).sum();
            let dot: f64 = rows
                .map(|r| f64::from(a[r * n + c]) * f64::from(b[r * n + c]))
                .sum();
            assert!(
                (f64::from(whole[2][item * n + c]) - sum).abs() < 1e-5,
                "sum[{item}, {c}]"
            );
            assert!(
                (f64::from(whole[3][item * n + c]) - dot).abs() < 1e-5,
                "dot[{item}, {c}]"
            );
        }
    }
    let mut jit = Jit::new().expect("jit");
    let ragged = Reduce {
        name: "ragged".into(),
        kind: ReduceKind::ItemSums { rows_per_item: 5 },
        rows: 12,
        n: 3,
        loads: Vec::new(),
    };
    assert!(jit.compile_reduce(&ragged).is_err());
}

/// Column moments of an input stored in bf16 are, bit for bit, those of
/// the f32s its values are, on vectors and the scalar tail, whatever the
/// split; no other reduction, and no other input, reads bf16.
#[test]
fn column_moments_read_bf16_as_the_rounded_values() {
    for (rows, n) in [(7 * 25, 13), (32 * 49, 64), (1, 3), (3, 6)] {
        let x = data(rows * n, 9, -3.0, 5.0);
        let rounded: Vec<u16> = x.iter().map(|&v| round(v)).collect();
        let widened: Vec<f32> = rounded.iter().map(|&v| widen(v)).collect();
        let slots: Vec<f32> = rounded
            .chunks(2)
            .map(|p| f32::from_bits(u32::from(p[0]) | u32::from(*p.get(1).unwrap_or(&0)) << 16))
            .collect();
        let (_jit, f32_kernel) = compile(ReduceKind::ColumnMoments, rows, n);
        let mut jit = Jit::new().expect("jit");
        let bf16_kernel = jit
            .compile_reduce(&Reduce {
                name: "bf16 moments".into(),
                kind: ReduceKind::ColumnMoments,
                rows,
                n,
                loads: vec![Storage::Bf16],
            })
            .expect("compiles");
        let mut expected = vec![widened, vec![0.0; n], vec![0.0; n]];
        run(&f32_kernel, &mut expected, false);
        let mut got = vec![slots, vec![f32::NAN; n], vec![f32::NAN; n]];
        run(&bf16_kernel, &mut got, true);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got[1]), bits(&expected[1]), "mean {rows}x{n}");
        assert_eq!(bits(&got[2]), bits(&expected[2]), "variance {rows}x{n}");
    }
    let mut jit = Jit::new().expect("jit");
    for (kind, loads) in [
        (ReduceKind::ColumnSums, vec![Storage::Bf16]),
        (ReduceKind::Softmax, vec![Storage::Bf16]),
        (ReduceKind::ColumnMoments, vec![Storage::F32, Storage::Bf16]),
    ] {
        let refused = jit.compile_reduce(&Reduce {
            name: format!("{kind:?} {loads:?}"),
            kind,
            rows: 4,
            n: 4,
            loads,
        });
        assert!(
            matches!(refused, Err(CodegenError::Malformed { .. })),
            "{kind:?}"
        );
    }
}
