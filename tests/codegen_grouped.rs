//! The grouped convolution kernels (`conv(groups: g)`) against the
//! reference implementation and an explicit vector-Jacobian product in f64,
//! on odd sizes, strides, paddings and dilations; the bitwise determinism of
//! any split of the domain; and malformed calls.

#[path = "support/reference.rs"]
mod reference;

use std::ops::Range;

use cnnc::codegen::contraction::ConvShape;
use cnnc::codegen::grouped::{GroupedConv, GroupedKernel, GroupedPass};
use cnnc::codegen::program::Kernel;
use cnnc::graph::Padding;
use cnnc::ops::{output_size, same_padding};
use ndarray::{ArrayD, IxDyn};

/// The tolerance, relative to the element or to the root mean square of
/// the expected values where the element is small.
const RELATIVE: f64 = 1e-5;

/// A small deterministic generator of test data in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn assert_close(actual: &[f32], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let rms = (expected.iter().map(|e| e * e).sum::<f64>() / expected.len().max(1) as f64).sqrt();
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let bound = RELATIVE * e.abs().max(rms) + 1e-30;
        assert!(
            (f64::from(a) - e).abs() <= bound,
            "{what}: element {i} is {a}, expected {e} (bound {bound})"
        );
    }
}

/// A grouped convolution test case: its sizes and random operands.
struct Case {
    shape: ConvShape,
    groups: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    dy: Vec<f32>,
    output: [usize; 2],
}

impl Case {
    /// `[batch, height, width, in, filters, groups]`, kernel, stride,
    /// dilation, padding, bias.
    fn new(
        [batch, height, width, in_channels, out_channels, groups]: [usize; 6],
        kernel: [usize; 2],
        [stride, dilation]: [[usize; 2]; 2],
        padding: Padding,
        bias: bool,
    ) -> Case {
        let shape = ConvShape {
            batch,
            height,
            width,
            in_channels,
            out_channels,
            kernel,
            stride,
            dilation,
            padding,
            bias,
        };
        let size = |i: usize| {
            let [input, k, s, d] = [[height, width][i], kernel[i], stride[i], dilation[i]];
            output_size(input as u64, k as u64, s as u64, d as u64, padding.axis(i)).unwrap()
                as usize
        };
        let output = [size(0), size(1)];
        let w_len = kernel[0] * kernel[1] * in_channels / groups * out_channels;
        let y_len = batch * output[0] * output[1] * out_channels;
        Case {
            shape,
            groups,
            x: data(batch * height * width * in_channels, 1),
            w: data(w_len, 2),
            b: bias.then(|| data(out_channels, 3)),
            dy: data(y_len, 4),
            output,
        }
    }

    fn kernel(&self, pass: GroupedPass) -> GroupedKernel {
        let desc = GroupedConv {
            name: "grouped".into(),
            shape: self.shape,
            groups: self.groups,
            pass,
        };
        desc.build().expect("a well-formed grouped convolution")
    }

    fn reference(&self) -> Vec<f64> {
        let s = &self.shape;
        let array = |shape: &[usize], values: &[f32]| {
            ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches")
        };
        let x = array(&[s.batch, s.height, s.width, s.in_channels], &self.x);
        let kernel_shape = [
            s.kernel[0],
            s.kernel[1],
            s.in_channels / self.groups,
            s.out_channels,
        ];
        let w = array(&kernel_shape, &self.w);
        let b = self.b.as_ref().map(|b| array(&[s.out_channels], b));
        let window = reference::Window {
            stride: s.stride.map(|v| v as u64),
            dilation: s.dilation.map(|v| v as u64),
            padding: s.padding,
        };
        let y = reference::grouped_conv2d(&x, &w, b.as_ref(), window, self.groups);
        y.iter().map(|&v| f64::from(v)).collect()
    }

    /// The explicit vector-Jacobian product of `dy`: `(dx, dw, dbias)`.
    fn vjp(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let s = &self.shape;
        let before = |i: usize| match s.padding {
            Padding::Same => {
                let input = [s.height, s.width][i] as u64;
                let k = [s.kernel[i], s.stride[i], s.dilation[i]].map(|v| v as u64);
                same_padding(input, k[0], k[1], k[2]).0 as isize
            }
            Padding::Valid => 0,
            Padding::Explicit { pads, .. } => pads[i][0] as isize,
        };
        let [oh, ow] = self.output;
        let (c, f) = (s.in_channels, s.out_channels);
        let (cin, cout) = (c / self.groups, f / self.groups);
        let (mut dx, mut dw, mut db) = (
            vec![0.0; self.x.len()],
            vec![0.0; self.w.len()],
            vec![0.0; f],
        );
        for (r, g) in self.dy.chunks_exact(f).enumerate() {
            let (b, oy, ox) = (r / (oh * ow), r / ow % oh, r % ow);
            for (fi, &gf) in g.iter().enumerate() {
                let gf = f64::from(gf);
                db[fi] += gf;
                for ky in 0..s.kernel[0] {
                    let iy = (oy * s.stride[0] + ky * s.dilation[0]) as isize - before(0);
                    for kx in 0..s.kernel[1] {
                        let ix = (ox * s.stride[1] + kx * s.dilation[1]) as isize - before(1);
                        if iy < 0 || ix < 0 || iy >= s.height as isize || ix >= s.width as isize {
                            continue;
                        }
                        let pixel = ((b * s.height + iy as usize) * s.width + ix as usize) * c;
                        for i in 0..cin {
                            let xi = pixel + fi / cout * cin + i;
                            let wi = ((ky * s.kernel[1] + kx) * cin + i) * f + fi;
                            dx[xi] += gf * f64::from(self.w[wi]);
                            dw[wi] += gf * f64::from(self.x[xi]);
                        }
                    }
                }
            }
        }
        (dx, dw, db)
    }

    /// Runs `pass` over `parts` of its domain on copies of this case's
    /// buffers: the written buffers, in order.
    fn run(&self, pass: GroupedPass, parts: &[Range<usize>]) -> Vec<Vec<f32>> {
        let kernel = self.kernel(pass);
        let f = self.shape.out_channels;
        let mut buffers: Vec<Vec<f32>> = match pass {
            GroupedPass::Forward => {
                let mut b = vec![self.x.clone(), self.w.clone()];
                b.extend(self.b.clone());
                b.push(vec![f32::NAN; self.dy.len()]);
                b
            }
            GroupedPass::BackwardData => {
                vec![
                    self.dy.clone(),
                    self.w.clone(),
                    vec![f32::NAN; self.x.len()],
                ]
            }
            GroupedPass::BackwardFilter => {
                let mut b = vec![
                    self.x.clone(),
                    self.dy.clone(),
                    vec![f32::NAN; self.w.len()],
                ];
                if self.b.is_some() {
                    b.push(vec![f32::NAN; f]);
                }
                b
            }
        };
        let args: Vec<*mut f32> = buffers.iter_mut().map(|b| b.as_mut_ptr()).collect();
        for part in parts {
            // SAFETY: the buffers have the lengths of the kernel's signature.
            unsafe { kernel.run(&args, part.clone()) }.expect("the call is well-formed");
        }
        let read = match pass {
            GroupedPass::Forward => 2 + usize::from(self.b.is_some()),
            GroupedPass::BackwardData | GroupedPass::BackwardFilter => 2,
        };
        buffers.split_off(read)
    }

    /// Runs `pass` over its whole domain in one call.
    fn run_whole(&self, pass: GroupedPass) -> Vec<Vec<f32>> {
        let whole = 0..self.domain(pass);
        self.run(pass, std::slice::from_ref(&whole))
    }

    fn domain(&self, pass: GroupedPass) -> usize {
        self.kernel(pass).domain()
    }
}

fn cases() -> Vec<Case> {
    let one = [1, 1];
    vec![
        // Two groups, stride 2, TensorFlow's same padding (odd pixel after).
        Case::new(
            [2, 7, 6, 4, 6, 2],
            [3, 3],
            [[2, 2], one],
            Padding::Same,
            true,
        ),
        // ResNeXt's shape, small: 8 groups of 4 channels, 3x3.
        Case::new(
            [2, 5, 5, 32, 32, 8],
            [3, 3],
            [one, one],
            Padding::Same,
            false,
        ),
        // Four groups, a rectangular kernel, dilation, valid padding.
        Case::new(
            [1, 9, 8, 8, 12, 4],
            [3, 2],
            [[1, 2], [2, 1]],
            Padding::Valid,
            true,
        ),
        // One channel per group (a depthwise convolution by another name).
        Case::new(
            [2, 4, 5, 6, 12, 6],
            [2, 3],
            [[2, 1], one],
            Padding::Same,
            true,
        ),
        // Explicit padding, uneven on every side (`padding: [2, 0, 1, 3]`).
        Case::new(
            [2, 5, 4, 6, 9, 3],
            [3, 3],
            [[2, 1], one],
            Padding::Explicit {
                pads: [[2, 0], [1, 3]],
                ceil: false,
            },
            true,
        ),
        // A 1x1 kernel with more input than output channels per group.
        Case::new(
            [3, 3, 3, 12, 4, 2],
            [1, 1],
            [one, one],
            Padding::Valid,
            true,
        ),
    ]
}

fn uneven(domain: usize) -> Vec<Range<usize>> {
    let a = domain / 3;
    let b = (a + 1).min(domain);
    vec![0..a, a..b, b..domain]
}

#[test]
fn forward_matches_the_reference() {
    for (i, case) in cases().iter().enumerate() {
        let y = case.run_whole(GroupedPass::Forward);
        assert_close(&y[0], &case.reference(), &format!("case {i}: y"));
    }
}

#[test]
fn backward_passes_match_the_vjp() {
    for (i, case) in cases().iter().enumerate() {
        let (dx, dw, db) = case.vjp();
        let got = case.run_whole(GroupedPass::BackwardData);
        assert_close(&got[0], &dx, &format!("case {i}: dx"));
        let got = case.run_whole(GroupedPass::BackwardFilter);
        assert_close(&got[0], &dw, &format!("case {i}: dkernel"));
        match &case.b {
            Some(_) => assert_close(&got[1], &db, &format!("case {i}: dbias")),
            None => assert_eq!(got.len(), 1, "case {i}: no bias gradient without a bias"),
        }
    }
}

#[test]
fn any_split_is_bitwise_identical() {
    let bits = |buffers: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        buffers
            .iter()
            .map(|b| b.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    for case in cases() {
        for pass in [
            GroupedPass::Forward,
            GroupedPass::BackwardData,
            GroupedPass::BackwardFilter,
        ] {
            let whole = bits(case.run_whole(pass));
            let split = bits(case.run(pass, &uneven(case.domain(pass))));
            assert_eq!(whole, split, "{pass:?}");
        }
    }
}

#[test]
fn a_call_outside_the_domain_is_refused() {
    let case = &cases()[0];
    let kernel = case.kernel(GroupedPass::Forward);
    let mut buffers = [
        case.x.clone(),
        case.w.clone(),
        vec![0.0; 6],
        vec![0.0; case.dy.len()],
    ];
    let args: Vec<*mut f32> = buffers.iter_mut().map(|b| b.as_mut_ptr()).collect();
    let domain = kernel.domain();
    // SAFETY: the kernel refuses the call before it reads a buffer.
    let err = unsafe { kernel.run(&args, 0..domain + 1) }.unwrap_err();
    assert!(err.contains(&format!("a domain of {domain}")), "{err}");
}
