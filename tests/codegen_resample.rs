//! The resampling kernel (upsampling and its gradient, nearest and
//! bilinear) against the reference implementation on odd shapes and
//! factors, bitwise determinism under any split of its domain, and the
//! errors of malformed descriptions.

#[path = "support/reference.rs"]
mod reference;

use std::ops::Range;

use cnnc::codegen::program::Kernel;
use cnnc::codegen::resample::{Resample, ResamplePass};
use cnnc::graph::Interpolation;
use ndarray::{ArrayD, IxDyn};

/// A small deterministic generator of test data in (-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// `[batch, height, width, channels]` and `[fh, fw]`: one pixel, factors
/// of 1, odd sizes, channels that are not a multiple of the vector width.
const CASES: [([usize; 4], [usize; 2]); 6] = [
    ([1, 1, 1, 1], [2, 2]),
    ([2, 3, 5, 3], [2, 2]),
    ([1, 4, 3, 7], [3, 1]),
    ([3, 2, 2, 1], [1, 4]),
    ([2, 5, 4, 2], [3, 5]),
    ([1, 1, 6, 4], [4, 3]),
];

const MODES: [Interpolation; 2] = [Interpolation::Nearest, Interpolation::Bilinear];

fn resample(
    mode: Interpolation,
    input: [usize; 4],
    factor: [usize; 2],
    pass: ResamplePass,
) -> Resample {
    Resample {
        name: format!("{}_{input:?}_{factor:?}", mode.name()),
        mode,
        factor,
        input,
        pass,
    }
}

/// Runs `desc` on `source` over `splits` of its domain, one call each.
fn run(desc: &Resample, source: &[f32], splits: &[Range<usize>]) -> Vec<f32> {
    let kernel = desc.kernel().expect("a kernel");
    let (read, written) = desc.lengths().expect("lengths");
    assert_eq!(source.len(), read, "{}: source length", desc.name);
    // NaN everywhere: a value the kernel does not write stays NaN.
    let mut target = vec![f32::NAN; written];
    let args = [source.as_ptr().cast_mut(), target.as_mut_ptr()];
    for items in splits {
        // SAFETY: the buffers have the lengths the description gives.
        unsafe { kernel.run(&args, items.clone()) }.expect("runs");
    }
    target
}

fn whole(desc: &Resample, source: &[f32]) -> Vec<f32> {
    let domain = desc.kernel().expect("a kernel").domain();
    run(desc, source, std::slice::from_ref(&(0..domain)))
}

#[track_caller]
fn assert_close(what: &str, ours: &[f32], expected: &ArrayD<f32>) {
    assert_eq!(ours.len(), expected.len(), "{what}: length");
    for (i, (&a, &b)) in ours.iter().zip(expected.iter()).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
            "{what}[{i}]: kernel {a}, reference {b}"
        );
    }
}

fn shape(dims: [usize; 4]) -> Vec<usize> {
    dims.to_vec()
}

#[test]
fn upsampling_matches_the_reference() {
    for mode in MODES {
        for (seed, (input, factor)) in CASES.into_iter().enumerate() {
            let desc = resample(mode, input, factor, ResamplePass::Forward);
            let x = data(input.iter().product(), seed as u64);
            let expected = reference::upsample(
                &ArrayD::from_shape_vec(IxDyn(&shape(input)), x.clone()).expect("shape"),
                factor.map(|f| f as u64),
                mode,
            );
            assert_close(&desc.name, &whole(&desc, &x), &expected);
        }
    }
}

#[test]
fn the_upsampling_gradient_matches_the_reference() {
    for mode in MODES {
        for (seed, (input, factor)) in CASES.into_iter().enumerate() {
            let desc = resample(mode, input, factor, ResamplePass::Backward);
            let [b, h, w, c] = input;
            let large = [b, h * factor[0], w * factor[1], c];
            let dy = data(large.iter().product(), 10 + seed as u64);
            let expected = reference::upsample_grad(
                &shape(input),
                &ArrayD::from_shape_vec(IxDyn(&shape(large)), dy.clone()).expect("shape"),
                factor.map(|f| f as u64),
                mode,
            );
            assert_close(&desc.name, &whole(&desc, &dy), &expected);
        }
    }
}

#[test]
fn any_split_of_the_domain_gives_the_same_bits() {
    let (input, factor) = CASES[4];
    for mode in MODES {
        for pass in [ResamplePass::Forward, ResamplePass::Backward] {
            let desc = resample(mode, input, factor, pass);
            let (read, _) = desc.lengths().expect("lengths");
            let source = data(read, 3);
            let domain = desc.kernel().expect("a kernel").domain();
            let split = run(&desc, &source, &[0..1, 1..domain / 2, domain / 2..domain]);
            assert_eq!(split, whole(&desc, &source), "{}", desc.name);
        }
    }
}

#[test]
fn malformed_descriptions_are_refused() {
    let zero = resample(
        Interpolation::Nearest,
        [1, 2, 2, 1],
        [0, 2],
        ResamplePass::Forward,
    );
    assert_eq!(zero.kernel().unwrap_err(), "an upsampling factor is 0");
    let huge = resample(
        Interpolation::Bilinear,
        [1, usize::MAX / 2, 2, 1],
        [4, 1],
        ResamplePass::Backward,
    );
    assert_eq!(huge.lengths().unwrap_err(), "the upsampled size overflows");
}
