//! The contraction kernels (convolution and dense, forward and backward)
//! against the reference implementation and an explicit vector-Jacobian
//! product in f64, on odd sizes, strides, paddings and dilations; the
//! backward kernels are also tied to the reference forward by the adjoint
//! identity (the layer is linear in its input and in its kernel, so a
//! difference quotient of the reference is exact); the fused epilogue; the
//! bitwise determinism of any split of the domain; and malformed
//! descriptions.

#[path = "support/reference.rs"]
mod reference;

use std::ops::Range;

use cnnc::codegen::contraction::bf16::Backend;
use cnnc::codegen::contraction::winograd::{
    self, Direction, Tile, WinogradBackwardFilter, WinogradBuffers, WinogradConv, WinogradFilter,
    WinogradFilterGradient,
};
use cnnc::codegen::contraction::{
    forward_splits_columns, live_rows_len, live_taps, BackwardDataBuffers, BackwardFilterBuffers,
    ConvBackwardData, ConvBackwardFilter, ConvForward, ConvShape, DenseShape, Epilogue,
    ForwardBuffers,
};
use cnnc::codegen::elementwise::{Binary, Elementwise, Expr, Operand};
use cnnc::codegen::{CodegenError, CompiledKernel, Jit};
use cnnc::graph::{AxisPadding, Padding};
use cnnc::ops::{output_size, same_padding};
use ndarray::{ArrayD, IxDyn};

/// The tolerance: relative to the element, or to the root mean square of
/// the expected values where the element is small (cancellation).
const RELATIVE: f64 = 1e-4;

/// The tolerance of the Winograd kernels, in the same terms. Their
/// transforms scale values by up to 8 (F(4x4, 3x3)) or 2 and cancel them
/// again, so their rounding error is larger than a direct sum's: the
/// largest measured over these cases is 2.1e-5 for F(4x4, 3x3) and 1.1e-6
/// for F(2x2, 3x3), against 9.5e-7 for the im2col kernels.
const WINOGRAD_RELATIVE: f64 = 1e-4;

/// The tolerance of the Winograd kernel gradients. Theirs sums over every
/// tile of the batch the products of the output gradient transformed by
/// `A` (whose 2-D entries reach 64 for F(4x4, 3x3)) and the transformed
/// input, then transforms back by `Gᵀ`: the largest error measured over
/// these cases is 7.4e-5 for F(4x4, 3x3) (one input channel, 48x48
/// images) and 5.5e-6 for F(2x2, 3x3). Other CPUs run the GEMM's other
/// micro-kernels, hence the margin.
const WINOGRAD_GRADIENT_RELATIVE: f64 = 3e-4;

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

fn assert_close(actual: &[f32], expected: &[f64], what: &str) {
    assert_within(actual, expected, RELATIVE, what);
}

fn assert_within(actual: &[f32], expected: &[f64], relative: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let rms = (expected.iter().map(|e| e * e).sum::<f64>() / expected.len().max(1) as f64).sqrt();
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let bound = relative * e.abs().max(rms) + 1e-30;
        assert!(
            (f64::from(a) - e).abs() <= bound,
            "{what}: element {i} is {a}, expected {e} (bound {bound})"
        );
    }
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn array(shape: &[usize], values: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches")
}

/// `0..domain` in three uneven parts (some possibly empty).
fn uneven(domain: usize) -> Vec<Range<usize>> {
    let a = domain / 3;
    let b = (a + 1).min(domain);
    vec![0..a, a..b, b..domain]
}

/// A convolution test case: its shape and random operands.
struct Case {
    shape: ConvShape,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    /// A random output gradient.
    dy: Vec<f32>,
    output_size: [usize; 2],
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        [batch, height, width, in_channels, out_channels]: [usize; 5],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
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
        let output_size = [0, 1].map(|i| {
            output_size(
                [height, width][i] as u64,
                kernel[i] as u64,
                stride[i] as u64,
                dilation[i] as u64,
                padding.axis(i),
            )
            .expect("the window fits") as usize
        });
        let seed = (batch * 1000 + height * 100 + width * 10 + in_channels) as u64;
        let out_len = batch * output_size[0] * output_size[1] * out_channels;
        Case {
            x: data(batch * height * width * in_channels, seed, -1.0, 1.0),
            w: data(
                kernel[0] * kernel[1] * in_channels * out_channels,
                seed + 1,
                -1.0,
                1.0,
            ),
            b: bias.then(|| data(out_channels, seed + 2, -1.0, 1.0)),
            dy: data(out_len, seed + 3, -1.0, 1.0),
            shape,
            output_size,
        }
    }

    fn dense(rows: usize, inputs: usize, units: usize, bias: bool) -> Case {
        let one = [1, 1];
        Case::new(
            [rows, 1, 1, inputs, units],
            one,
            one,
            one,
            Padding::Valid,
            bias,
        )
    }

    fn name(&self) -> String {
        format!("{:?}", self.shape)
    }

    fn input_shape(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.batch, s.height, s.width, s.in_channels]
    }

    fn kernel_shape(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.kernel[0], s.kernel[1], s.in_channels, s.out_channels]
    }

    /// `reference::conv2d` on `x` and `w` (no bias).
    fn reference(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
        let s = &self.shape;
        let bias = bias.map(|b| array(&[s.out_channels], b));
        let y = reference::conv2d(
            &array(&self.input_shape(), x),
            &array(&self.kernel_shape(), w),
            bias.as_ref(),
            s.stride.map(|v| v as u64),
            s.dilation.map(|v| v as u64),
            s.padding,
        );
        y.iter().map(|&v| f64::from(v)).collect()
    }

    /// The explicit vector-Jacobian product of `dy`: `(dx, dw, dbias)`.
    fn vjp(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let s = &self.shape;
        let before = |i: usize| match s.padding.axis(i) {
            AxisPadding::Same => {
                let input = [s.height, s.width][i] as u64;
                let k = [s.kernel[i], s.stride[i], s.dilation[i]].map(|v| v as u64);
                same_padding(input, k[0], k[1], k[2]).0 as isize
            }
            AxisPadding::Explicit { before, .. } => before as isize,
        };
        let (top, left) = (before(0), before(1));
        let [oh, ow] = self.output_size;
        let (c, f) = (s.in_channels, s.out_channels);
        let mut dx = vec![0.0; self.x.len()];
        let mut dw = vec![0.0; self.w.len()];
        let mut db = vec![0.0; f];
        for b in 0..s.batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = &self.dy[((b * oh + oy) * ow + ox) * f..][..f];
                    for fi in 0..f {
                        db[fi] += f64::from(g[fi]);
                    }
                    for ky in 0..s.kernel[0] {
                        let iy = (oy * s.stride[0] + ky * s.dilation[0]) as isize - top;
                        if iy < 0 || iy >= s.height as isize {
                            continue;
                        }
                        for kx in 0..s.kernel[1] {
                            let ix = (ox * s.stride[1] + kx * s.dilation[1]) as isize - left;
                            if ix < 0 || ix >= s.width as isize {
                                continue;
                            }
                            let xi = ((b * s.height + iy as usize) * s.width + ix as usize) * c;
                            for ci in 0..c {
                                let wi = ((ky * s.kernel[1] + kx) * c + ci) * f;
                                for fi in 0..f {
                                    let gf = f64::from(g[fi]);
                                    dx[xi + ci] += gf * f64::from(self.w[wi + fi]);
                                    dw[wi + fi] += gf * f64::from(self.x[xi + ci]);
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dw, db)
    }

    /// The forward kernel's buffers: this case's input, kernel and bias,
    /// and `y` for the output.
    fn forward_buffers(&self, y: &mut [f32]) -> ForwardBuffers {
        ForwardBuffers {
            input: self.x.as_ptr(),
            kernel: self.w.as_ptr(),
            bias: self.b.as_ref().map(|b| b.as_ptr()),
            output: y.as_mut_ptr(),
        }
    }

    fn forward(&self, epilogue: Option<&Epilogue>, split: Split) -> Vec<f32> {
        let kernel = ConvForward::new("conv", &self.shape).expect("a valid shape");
        let mut y = vec![f32::NAN; kernel.lengths().output];
        let buffers = self.forward_buffers(&mut y);
        let mut scratch = vec![0.0; kernel.scratch_len()];
        for part in split.parts(kernel.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { kernel.run(&buffers, epilogue, &mut scratch, part) }.expect("runs");
        }
        y
    }

    fn backward_data(&self, split: Split) -> Vec<f32> {
        let kernel = ConvBackwardData::new("conv_dx", &self.shape).expect("a valid shape");
        let mut dx = vec![f32::NAN; kernel.lengths().input];
        let buffers = BackwardDataBuffers {
            output_grad: self.dy.as_ptr(),
            kernel: self.w.as_ptr(),
            input_grad: dx.as_mut_ptr(),
        };
        let mut scratch = vec![0.0; kernel.scratch_len()];
        for part in split.parts(kernel.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { kernel.run(&buffers, None, &mut scratch, part) }.expect("runs");
        }
        dx
    }

    /// `direction` (the forward pass or the input gradient) of the layer as
    /// a Winograd convolution with `tile`: the kernel's transform, then the
    /// convolution, each split by `split`.
    fn winograd(
        &self,
        tile: Tile,
        direction: Direction,
        epilogue: Option<&Epilogue>,
        split: Split,
    ) -> Vec<f32> {
        self.winograd_on(Products::Chosen, tile, direction, epilogue, split)
    }

    /// [`Case::winograd`] with its products where `products` says.
    fn winograd_on(
        &self,
        products: Products,
        tile: Tile,
        direction: Direction,
        epilogue: Option<&Epilogue>,
        split: Split,
    ) -> Vec<f32> {
        let conv = WinogradConv::new("winograd", &self.shape, tile, direction).expect("3x3");
        let conv = match products {
            Products::Chosen => conv,
            Products::Gemm => conv.on_gemm(),
        };
        let filter = WinogradFilter::for_conv("filter", &self.shape, &conv).expect("3x3");
        let mut u = vec![f32::NAN; filter.transformed_len()];
        for part in split.parts(filter.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { filter.run(self.w.as_ptr(), u.as_mut_ptr(), part) }.expect("runs");
        }
        // `WinogradConv::new` has refused the kernel gradient above.
        let source = if direction == Direction::Forward {
            &self.x
        } else {
            &self.dy
        };
        let mut out = vec![f32::NAN; conv.lengths().2];
        let buffers = WinogradBuffers {
            input: source.as_ptr(),
            kernel: u.as_ptr(),
            bias: self
                .b
                .as_ref()
                .filter(|_| conv.has_bias())
                .map(|b| b.as_ptr()),
            output: out.as_mut_ptr(),
        };
        let mut scratch = vec![0.0; conv.scratch_len()];
        for part in split.parts(conv.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { conv.run(&buffers, epilogue, &mut scratch, part) }.expect("runs");
        }
        out
    }

    /// The kernel and bias gradients on Winograd's transforms with `tile`,
    /// summing `chunk` tiles at a time (or the kernel's own choice): the
    /// transformed kernel's gradient, then its transform, each split by
    /// `split`.
    fn winograd_backward_filter(
        &self,
        tile: Tile,
        chunk: Option<usize>,
        split: Split,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut product = WinogradBackwardFilter::new("dw", &self.shape, tile).expect("3x3");
        if let Some(tiles) = chunk {
            product = product.with_chunk(tiles);
        }
        let transform = WinogradFilterGradient::new("dw.g", &self.shape, tile).expect("3x3");
        let (du, db) = self.winograd_transformed_gradient(&product, &split.parts(product.domain()));
        let mut dw = vec![f32::NAN; transform.kernel_len()];
        let (du_ptr, dw_ptr) = (du.as_ptr() as usize, dw.as_mut_ptr() as usize);
        // SAFETY: the parts are disjoint, and the buffers have the lengths
        // the kernel reports.
        in_threads(&split.parts(transform.domain()), 0, |items, _| unsafe {
            transform
                .run(du_ptr as *const f32, dw_ptr as *mut f32, items)
                .expect("runs")
        });
        (dw, db)
    }

    /// The transformed kernel's gradient and the bias gradient by
    /// `product`, its domain split into `parts`, each run at once on a
    /// thread of its own.
    fn winograd_transformed_gradient(
        &self,
        product: &WinogradBackwardFilter,
        parts: &[Range<usize>],
    ) -> (Vec<f32>, Vec<f32>) {
        let mut du = vec![f32::NAN; product.lengths().2];
        let mut db = vec![f32::NAN; self.shape.out_channels];
        let buffers = BackwardFilterBuffers {
            input: self.x.as_ptr(),
            output_grad: self.dy.as_ptr(),
            kernel_grad: du.as_mut_ptr(),
            bias_grad: self.shape.bias.then_some(db.as_mut_ptr()),
        };
        in_threads(
            parts,
            product.scratch_len(),
            // SAFETY: the parts are disjoint, and the buffers have the
            // lengths the kernel reports.
            |items, scratch| unsafe { product.run(&buffers, scratch, items).expect("runs") },
        );
        (du, db)
    }

    fn backward_filter(&self, split: Split) -> (Vec<f32>, Vec<f32>) {
        let kernel = ConvBackwardFilter::new("conv_dw", &self.shape).expect("a valid shape");
        self.backward_filter_on(&kernel, split)
    }

    /// `kernel`'s kernel and bias gradients of this case.
    fn backward_filter_on(
        &self,
        kernel: &ConvBackwardFilter,
        split: Split,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut dw = vec![f32::NAN; kernel.lengths().kernel];
        let mut db = vec![f32::NAN; self.shape.out_channels];
        let buffers = BackwardFilterBuffers {
            input: self.x.as_ptr(),
            output_grad: self.dy.as_ptr(),
            kernel_grad: dw.as_mut_ptr(),
            bias_grad: self.shape.bias.then_some(db.as_mut_ptr()),
        };
        let mut scratch = vec![0.0; kernel.scratch_len()];
        for part in split.parts(kernel.domain()) {
            // SAFETY: the buffers have the lengths the kernel reports.
            unsafe { kernel.run(&buffers, &mut scratch, part) }.expect("runs");
        }
        (dw, db)
    }
}

/// The bit patterns of `values`, for comparisons that must be exact.
fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

/// Where a test runs a Winograd convolution's products.
#[derive(Clone, Copy, Debug)]
enum Products {
    /// Where the kernel chooses: in registers on a CPU with AVX-512.
    Chosen,
    /// Through the `gemm` crate ([`WinogradConv::on_gemm`]).
    Gemm,
}

/// How a test runs a kernel's domain.
#[derive(Clone, Copy)]
enum Split {
    /// In one call.
    Whole,
    /// In three uneven calls, one after the other.
    Uneven,
}

impl Split {
    fn parts(self, domain: usize) -> Vec<Range<usize>> {
        match self {
            Split::Whole => std::iter::once(0..domain).collect(),
            Split::Uneven => uneven(domain),
        }
    }
}

/// Explicit padding `[top, bottom, left, right]`.
fn explicit([top, bottom, left, right]: [u64; 4]) -> Padding {
    Padding::explicit([[top, bottom], [left, right]], false)
}

/// Batch 1 and 7, odd sizes, channels that are not multiples of 4 or 16,
/// strides 1 and 2, `same`, `valid` and explicit padding, dilation 2, 1x1,
/// 3x3 and 7x7 kernels, and the taps that only ever read padding (3x3 on
/// 1x1 and 2x2 images, explicit padding wider than the kernel).
fn conv_cases() -> Vec<Case> {
    use Padding::{Same, Valid};
    let (one, two) = ([1, 1], [2, 2]);
    vec![
        Case::new([7, 5, 7, 3, 5], [1, 1], one, one, Same, true),
        Case::new([1, 9, 7, 5, 6], [1, 1], two, one, Valid, false),
        Case::new([7, 9, 11, 5, 17], [3, 3], one, one, Same, true),
        Case::new([1, 13, 9, 6, 7], [3, 3], two, one, Valid, true),
        Case::new([7, 7, 9, 3, 5], [3, 3], two, one, Same, false),
        Case::new([1, 11, 9, 3, 18], [3, 3], one, two, Same, true),
        Case::new([7, 13, 13, 2, 5], [3, 3], [2, 1], two, Valid, false),
        Case::new([1, 15, 13, 1, 9], [7, 7], one, one, Same, true),
        Case::new([7, 11, 11, 3, 5], [7, 7], two, one, Same, false),
        Case::new([7, 1, 1, 9, 5], [3, 3], one, one, Same, true),
        Case::new([7, 2, 2, 5, 6], [3, 3], two, one, Same, true),
        Case::new([1, 6, 5, 4, 3], [3, 1], [1, 2], one, Same, true),
        Case::new([3, 14, 14, 13, 19], [3, 3], one, one, Same, true),
        // One column: only the middle column of taps reads the image, so
        // the weight rows come in three separate runs.
        Case::new([7, 5, 1, 3, 4], [3, 3], one, one, Same, true),
        // Items of more than 128 rows (no transposed product).
        Case::new([7, 13, 13, 3, 5], [1, 1], one, one, Same, false),
        Case::new([1, 27, 27, 3, 4], [3, 3], one, one, Same, false),
        // Enough rows that the weight gradient sums several blocks of them.
        Case::new([7, 48, 48, 1, 3], [3, 3], one, one, Same, true),
        // Few rows and many channels: the forward product is split over
        // the channels, in blocks of 64 and a last one of 8 (or 2).
        Case::new([1, 7, 7, 9, 136], [3, 3], one, one, Same, true),
        Case::new([1, 3, 4, 5, 130], [3, 3], one, one, Same, false),
        // Explicit padding: a padded 1x1 convolution (not the plain GEMM
        // on its input), one that Winograd takes (at most 2 before), ones
        // padded more than the kernel (rows and columns of output that read
        // padding only), strided and dilated.
        Case::new(
            [7, 5, 7, 3, 5],
            [1, 1],
            one,
            one,
            explicit([1, 2, 0, 3]),
            true,
        ),
        Case::new(
            [1, 9, 8, 5, 6],
            [3, 3],
            one,
            one,
            explicit([2, 0, 1, 2]),
            true,
        ),
        Case::new(
            [7, 6, 7, 4, 5],
            [3, 3],
            one,
            one,
            explicit([4, 1, 3, 5]),
            false,
        ),
        Case::new(
            [1, 10, 9, 3, 7],
            [3, 3],
            two,
            one,
            explicit([1, 2, 2, 0]),
            true,
        ),
        Case::new(
            [7, 9, 9, 2, 5],
            [3, 3],
            one,
            two,
            explicit([3, 0, 0, 3]),
            true,
        ),
    ]
    .into_iter()
    .chain(direct_cases())
    .chain(tiny_cases())
    .collect()
}

/// Few taps and input channels: computed without im2col where the CPU has
/// AVX-512 (`first_layers_compute_directly`), the output channels in blocks
/// of 64, 16 and a masked rest.
fn direct_cases() -> Vec<Case> {
    use Padding::{Same, Valid};
    let (one, two) = ([1, 1], [2, 2]);
    vec![
        Case::new([3, 28, 28, 1, 100], [7, 7], one, one, Same, true),
        Case::new([2, 28, 27, 1, 64], [7, 7], two, one, Same, false),
        Case::new([7, 10, 9, 2, 33], [5, 5], [3, 2], one, Valid, true),
        Case::new([7, 8, 6, 7, 9], [3, 3], one, one, Valid, false),
        Case::new(
            [3, 12, 12, 1, 40],
            [5, 5],
            one,
            one,
            explicit([2, 3, 1, 0]),
            true,
        ),
    ]
}

/// Tiny images in batches of 16 and more: computed by position
/// (`tiny_images_are_computed_by_position`); the second is 19 images, a
/// block of 16 and one of 3.
fn tiny_cases() -> Vec<Case> {
    let same = |sizes, kernel, bias| Case::new(sizes, kernel, [1, 1], [1, 1], Padding::Same, bias);
    vec![
        same([16, 2, 2, 8, 7], [3, 3], true),
        same([19, 2, 3, 8, 6], [3, 3], false),
        same([16, 3, 3, 3, 5], [5, 5], true),
        Case::new(
            [16, 2, 2, 8, 7],
            [3, 3],
            [1, 1],
            [1, 1],
            explicit([2, 1, 0, 2]),
            true,
        ),
    ]
}

/// The 3x3 stride-1 cases, and more channels than one block of lanes
/// (16) holds, with both paddings.
fn winograd_cases() -> Vec<Case> {
    use Padding::{Same, Valid};
    let one = [1, 1];
    let mut cases: Vec<Case> = conv_cases()
        .into_iter()
        .filter(|case| winograd::unsupported(&case.shape).is_none())
        .collect();
    cases.extend([
        Case::new([7, 9, 8, 17, 33], [3, 3], one, one, Valid, true),
        Case::new([1, 6, 6, 33, 16], [3, 3], one, one, Same, false),
        Case::new([2, 3, 3, 40, 7], [3, 3], one, one, Valid, true),
        // More padding after the image than `same` gives: more tiles.
        Case::new(
            [2, 6, 7, 17, 9],
            [3, 3],
            one,
            one,
            explicit([2, 4, 0, 3]),
            true,
        ),
    ]);
    cases
}

fn dense_cases() -> Vec<Case> {
    vec![
        Case::dense(7, 13, 10, true),
        Case::dense(1, 37, 5, false),
        Case::dense(33, 70, 3, true),
        Case::dense(10, 20, 129, true),
    ]
}

#[test]
fn conv_forward_matches_the_reference() {
    for case in conv_cases().iter().chain(&dense_cases()) {
        let expected = case.reference(&case.x, &case.w, case.b.as_deref());
        assert_close(&case.forward(None, Split::Uneven), &expected, &case.name());
    }
}

#[test]
fn dense_forward_matches_the_reference() {
    for case in dense_cases() {
        let s = &case.shape;
        let kernel = ConvForward::dense(
            "dense",
            &DenseShape {
                rows: s.batch,
                inputs: s.in_channels,
                units: s.out_channels,
                bias: s.bias,
            },
        )
        .expect("a valid shape");
        let mut y = vec![f32::NAN; s.batch * s.out_channels];
        let buffers = case.forward_buffers(&mut y);
        let mut scratch = vec![0.0; kernel.scratch_len()];
        // SAFETY: the buffers have the lengths the kernel reports.
        unsafe { kernel.run(&buffers, None, &mut scratch, 0..kernel.domain()) }.expect("runs");
        let expected = reference::dense(
            &array(&[s.batch, s.in_channels], &case.x),
            &array(&[s.in_channels, s.out_channels], &case.w),
            case.b
                .as_ref()
                .map(|b| array(&[s.out_channels], b))
                .as_ref(),
        );
        assert_close(
            &y,
            &widen(expected.as_slice().expect("contiguous")),
            "dense",
        );
    }
}

#[test]
fn backward_data_matches_the_vjp() {
    for case in conv_cases().iter().chain(&dense_cases()) {
        let (dx, _, _) = case.vjp();
        assert_close(
            &case.backward_data(Split::Uneven),
            &dx,
            &format!("dx of {}", case.name()),
        );
    }
}

#[test]
fn backward_filter_matches_the_vjp() {
    for case in conv_cases().iter().chain(&dense_cases()) {
        let (dw, db) = case.backward_filter(Split::Uneven);
        let (_, dw_expected, db_expected) = case.vjp();
        assert_close(&dw, &dw_expected, &format!("dw of {}", case.name()));
        if case.shape.bias {
            assert_close(&db, &db_expected, &format!("dbias of {}", case.name()));
        }
    }
}

/// A kernel gradient of live rows ([`ConvBackwardFilter::live_rows`])
/// holds the whole gradient's rows of the taps that read some input, in
/// order, bit for bit (on the GEMM, and in bf16 on every backend this CPU
/// runs), and every row of the other taps is zero in the whole gradient.
#[test]
fn live_rows_are_the_whole_gradients_rows_of_the_live_taps() {
    let mut checked = 0;
    for case in conv_cases().iter().chain(&tiny_cases()) {
        let s = &case.shape;
        let Some(taps) = live_taps(s).expect("a valid shape") else {
            continue;
        };
        let mut kernels = vec![ConvBackwardFilter::new("dw", s).expect("valid")];
        for backend in Backend::ALL.into_iter().filter(|b| b.available()) {
            kernels.push(ConvBackwardFilter::bf16("dw", s, backend).expect("valid"));
        }
        for whole in kernels {
            let what = format!("{} {:?}", case.name(), whole.bf16_backend());
            let live = whole.clone().live_rows(true);
            let len = live_rows_len(s).expect("valid");
            assert_eq!(live.lengths().kernel, len, "{what}");
            assert_eq!(len, taps.stored_rows() * s.out_channels, "{what}");
            let (full, full_db) = case.backward_filter_on(&whole, Split::Whole);
            let (rows, db) = case.backward_filter_on(&live, Split::Uneven);
            assert_eq!(bits(&db), bits(&full_db), "{what}: the bias gradient");
            let cout = s.out_channels;
            let mut expected = vec![f32::NAN; len];
            for (row, values) in full.chunks_exact(cout).enumerate() {
                match taps.stored_row(row) {
                    Some(at) => expected[at * cout..][..cout].copy_from_slice(values),
                    None => assert!(values.iter().all(|&v| v == 0.0), "{what}: row {row}"),
                }
            }
            if whole.is_direct() {
                // The whole gradient computed without im2col sums in
                // another order.
                assert_within(&rows, &widen(&expected), RELATIVE, &what);
            } else {
                assert_eq!(bits(&rows), bits(&expected), "{what}");
            }
        }
        checked += 1;
    }
    // A 3x3 kernel on 1x1 images, and stride 2 on 2x2.
    assert!(checked >= 2, "{checked} cases with dead taps");
}

/// The Winograd kernels, with both tiles: the forward pass against the
/// reference, the input and kernel gradients against the explicit
/// vector-Jacobian product (the kernel gradient summed in one chunk of
/// tiles and in chunks of 5).
#[test]
fn winograd_matches_the_reference_and_the_vjp() {
    let cases = winograd_cases();
    assert!(cases.len() >= 8, "only {} Winograd cases", cases.len());
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    for case in &cases {
        let y = case.reference(&case.x, &case.w, case.b.as_deref());
        let (dx, dw, db) = case.vjp();
        for tile in Tile::ALL {
            let what = |pass: &str| format!("{pass} {tile:?} of {}", case.name());
            for direction in [Direction::Forward, Direction::BackwardData] {
                let conv = WinogradConv::new("v", &case.shape, tile, direction).expect("3x3");
                // In registers wherever the CPU has AVX-512, whatever the
                // items' size.
                assert_eq!(conv.runs_direct(), avx512, "{}", what("the products"));
            }
            // Both ways of running the products: as the kernel chooses, and
            // through the `gemm` crate, as on a CPU without AVX-512.
            for products in [Products::Chosen, Products::Gemm] {
                let what = |pass: &str| what(&format!("{pass} on {products:?}"));
                let forward =
                    case.winograd_on(products, tile, Direction::Forward, None, Split::Uneven);
                assert_within(&forward, &y, WINOGRAD_RELATIVE, &what("forward"));
                let data =
                    case.winograd_on(products, tile, Direction::BackwardData, None, Split::Uneven);
                assert_within(&data, &dx, WINOGRAD_RELATIVE, &what("dx"));
            }
            for chunk in [None, Some(5)] {
                let (kernel, bias) = case.winograd_backward_filter(tile, chunk, Split::Uneven);
                let what = |pass: &str| what(&format!("{pass} in chunks of {chunk:?}"));
                assert_within(&kernel, &dw, WINOGRAD_GRADIENT_RELATIVE, &what("dw"));
                if case.shape.bias {
                    assert_within(&bias, &db, RELATIVE, &what("dbias"));
                }
            }
        }
    }
}

/// Batch-1 Winograd kernels whose products run direct read the transformed
/// kernel in panels of 64 columns, which the kernel's transform writes so:
/// several panels with a narrower last one, in both directions, items of
/// tile rows and items of channels that start at a whole panel; items of
/// channels that do not keep the row-major layout. Each against the
/// reference and the explicit VJP, and split unevenly bitwise as whole.
#[test]
fn winograd_kernels_read_in_panels() {
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    // (case, whether the forward pass reads panels, whether the input
    // gradient does) where the CPU has AVX-512: 100 output channels in
    // items of tile rows (panels of 64 and 36); 100 input channels for the
    // input gradient; 256 channels in items of 128; 200 in items of 112,
    // which stay row-major.
    let cases = [
        (same_3x3([1, 14, 14, 9, 100], true), true, true),
        (same_3x3([1, 7, 7, 100, 9], false), true, true),
        (same_3x3([1, 3, 3, 5, 256], true), true, true),
        (same_3x3([1, 3, 3, 5, 200], false), false, true),
    ];
    for (case, forward_panels, data_panels) in &cases {
        let y = case.reference(&case.x, &case.w, case.b.as_deref());
        let (dx, _, _) = case.vjp();
        for tile in Tile::ALL {
            let what = |pass: &str| format!("{pass} {tile:?} of {}", case.name());
            for (direction, panels, expected) in [
                (Direction::Forward, *forward_panels, &y),
                (Direction::BackwardData, *data_panels, &dx),
            ] {
                let pass = what(&format!("{direction:?}"));
                let conv = WinogradConv::new("v", &case.shape, tile, direction).expect("3x3");
                assert_eq!(conv.reads_panels(), panels && avx512, "{pass}");
                let whole = case.winograd(tile, direction, None, Split::Whole);
                assert_within(&whole, expected, WINOGRAD_RELATIVE, &pass);
                let uneven = case.winograd(tile, direction, None, Split::Uneven);
                assert_eq!(bits(&uneven), bits(&whole), "{pass}");
            }
        }
    }
}

/// `<dy, conv(v, w)> = <dx, v>` and `<dy, conv(x, v)> = <dw, v>` for random
/// `v`, with `conv` the reference forward: the gradients are the adjoints
/// of the reference, not just of the explicit VJP above.
#[test]
fn backward_kernels_are_adjoint_to_the_reference_forward() {
    for case in conv_cases().iter().chain(&dense_cases()) {
        let dx = case.backward_data(Split::Uneven);
        let (dw, _) = case.backward_filter(Split::Uneven);
        let v_x = data(case.x.len(), 77, -1.0, 1.0);
        let v_w = data(case.w.len(), 78, -1.0, 1.0);
        let checks = [
            ("dx", case.reference(&v_x, &case.w, None), &dx, &v_x),
            ("dw", case.reference(&case.x, &v_w, None), &dw, &v_w),
        ];
        for (what, forward, gradient, v) in checks {
            let lhs: f64 = forward
                .iter()
                .zip(&case.dy)
                .map(|(y, &g)| y * f64::from(g))
                .sum();
            let magnitude: f64 = forward
                .iter()
                .zip(&case.dy)
                .map(|(y, &g)| (y * f64::from(g)).abs())
                .sum();
            let rhs: f64 = gradient
                .iter()
                .zip(v)
                .map(|(&g, &v)| f64::from(g) * f64::from(v))
                .sum();
            assert!(
                (lhs - rhs).abs() <= RELATIVE * magnitude,
                "{what} of {}: <dy, conv> = {lhs}, <gradient, v> = {rhs}",
                case.name()
            );
        }
    }
}

#[test]
fn dense_backward_matches_the_vjp() {
    for case in dense_cases() {
        let s = &case.shape;
        let dense = DenseShape {
            rows: s.batch,
            inputs: s.in_channels,
            units: s.out_channels,
            bias: s.bias,
        };
        let data_kernel = ConvBackwardData::dense("dense_dx", &dense).expect("valid");
        let filter_kernel = ConvBackwardFilter::dense("dense_dw", &dense).expect("valid");
        let mut dx = vec![f32::NAN; case.x.len()];
        let mut dw = vec![f32::NAN; case.w.len()];
        let mut db = vec![f32::NAN; s.out_channels];
        let data_buffers = BackwardDataBuffers {
            output_grad: case.dy.as_ptr(),
            kernel: case.w.as_ptr(),
            input_grad: dx.as_mut_ptr(),
        };
        let filter_buffers = BackwardFilterBuffers {
            input: case.x.as_ptr(),
            output_grad: case.dy.as_ptr(),
            kernel_grad: dw.as_mut_ptr(),
            bias_grad: s.bias.then_some(db.as_mut_ptr()),
        };
        let mut scratch = vec![0.0; data_kernel.scratch_len().max(filter_kernel.scratch_len())];
        // SAFETY: the buffers have the lengths the kernels report.
        unsafe {
            data_kernel
                .run(&data_buffers, None, &mut scratch, 0..data_kernel.domain())
                .expect("runs");
            filter_kernel
                .run(&filter_buffers, &mut scratch, 0..filter_kernel.domain())
                .expect("runs");
        }
        let (dx_expected, dw_expected, db_expected) = case.vjp();
        assert_close(&dx, &dx_expected, "dense dx");
        assert_close(&dw, &dw_expected, "dense dw");
        if s.bias {
            assert_close(&db, &db_expected, "dense dbias");
        }
    }
}

/// `relu(conv(x) + bias + residual)` in one pass: the epilogue adds a
/// per-channel bias and a residual tensor, and clamps, on each block of
/// rows the GEMM has just written.
#[test]
fn epilogue_fuses_bias_residual_and_relu() {
    let mut case = Case::new(
        [7, 9, 11, 5, 17],
        [3, 3],
        [1, 1],
        [1, 1],
        Padding::Same,
        false,
    );
    let bias = data(17, 5, -1.0, 1.0);
    let residual = data(case.dy.len(), 6, -1.0, 1.0);
    let kernel = Elementwise {
        name: "bias_residual_relu".into(),
        inputs: vec![Operand::Tensor, Operand::PerChannel, Operand::Tensor],
        exprs: vec![
            Expr::Load(0),
            Expr::Load(1),
            Expr::Load(2),
            Expr::Binary(Binary::Add, 0, 1),
            Expr::Binary(Binary::Add, 3, 2),
            Expr::Const(0.0),
            Expr::Binary(Binary::Max, 4, 5),
        ],
        outputs: vec![6],
        stores: Vec::new(),
    };
    let mut jit = Jit::new().expect("jit");
    let compiled = jit.compile_elementwise(&kernel).expect("compiles");
    // SAFETY: the kernel has 3 inputs and 1 output; the bias holds one row
    // of 17 channels, the residual the whole output.
    let epilogue = unsafe { Epilogue::new(&compiled, &[bias.as_ptr(), residual.as_ptr()], &[]) };
    let fused = case.forward(Some(&epilogue), Split::Uneven);
    let winograd = Tile::ALL
        .map(|tile| case.winograd(tile, Direction::Forward, Some(&epilogue), Split::Uneven));
    case.b = None;
    let plain = case.reference(&case.x, &case.w, Some(&bias));
    let expected: Vec<f64> = plain
        .iter()
        .zip(&residual)
        .map(|(&y, &r)| (y + f64::from(r)).max(0.0))
        .collect();
    assert_close(&fused, &expected, "fused epilogue");
    for (tile, fused) in Tile::ALL.iter().zip(&winograd) {
        let what = format!("fused epilogue of {tile:?}");
        assert_within(fused, &expected, WINOGRAD_RELATIVE, &what);
    }
}

/// A ReLU epilogue kernel (one input and one output, the product's), with
/// the JIT that holds its code (bound first, so that it outlives the kernel).
fn relu() -> (Jit, CompiledKernel) {
    let relu = Elementwise {
        name: "relu".into(),
        inputs: vec![Operand::Tensor],
        exprs: vec![
            Expr::Load(0),
            Expr::Const(0.0),
            Expr::Binary(Binary::Max, 0, 1),
        ],
        outputs: vec![2],
        stores: Vec::new(),
    };
    let mut jit = Jit::new().expect("jit");
    let compiled = jit.compile_elementwise(&relu).expect("compiles");
    (jit, compiled)
}

/// A 3x3 stride-1 `same` convolution of `sizes` (batch, height, width,
/// input and output channels).
fn same_3x3(sizes: [usize; 5], bias: bool) -> Case {
    Case::new(sizes, [3, 3], [1, 1], [1, 1], Padding::Same, bias)
}

/// A product of few rows (1 to 64) is split over its output channels: each
/// block of channels is computed by one item, any split of the items on threads
/// gives bitwise the whole domain's result, and an epilogue is refused.
#[test]
fn few_rows_split_over_channels() {
    let cases = [
        same_3x3([1, 7, 7, 9, 136], true),
        // Twelve rows, no bias.
        same_3x3([1, 3, 4, 5, 130], false),
        Case::dense(10, 20, 129, true),
    ];
    for case in &cases {
        let kernel = ConvForward::new("f", &case.shape).expect("valid");
        assert!(kernel.splits_columns(), "{}", case.name());
        assert_eq!(kernel.domain(), 3, "{}", case.name());
        forward_splits_are_bitwise_whole(case, &kernel, &[0..1, 1..3]);
        let (_jit, compiled) = relu();
        // SAFETY: the kernel has one input and one output, the product's.
        let epilogue = unsafe { Epilogue::new(&compiled, &[], &[]) };
        let mut scratch = vec![0.0; kernel.scratch_len()];
        let mut y = vec![f32::NAN; kernel.lengths().output];
        let buffers = case.forward_buffers(&mut y);
        // SAFETY: rejected before it touches the buffers.
        let refused = unsafe { kernel.run(&buffers, Some(&epilogue), &mut scratch, 0..3) };
        expect_malformed(refused, "epilogue");
    }
    // Four rows (a 2x2 image) split over their channels where the few-row
    // product runs on AVX-512's registers; elsewhere they stay one item,
    // which reads the weights in order. Either way the plan fuses no
    // epilogue into them, and any split gives the whole domain's result.
    let four = same_3x3([1, 2, 2, 5, 130], true);
    assert!(forward_splits_columns(4, 130));
    let kernel = ConvForward::new("f", &four.shape).expect("valid");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        kernel.splits_columns(),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    let expected = four.reference(&four.x, &four.w, four.b.as_deref());
    assert_close(&four.forward(None, Split::Uneven), &expected, &four.name());
    if kernel.domain() > 1 {
        forward_splits_are_bitwise_whole(&four, &kernel, &[0..1, 1..kernel.domain()]);
    }
}

/// A Winograd forward pass of few rows (1 to 64) and many channels, whose
/// tiles all fit one item, is split over its output channels as the GEMM's
/// is: both tiles match the reference, the items of channels give bitwise
/// the result of one call however they are split, they write every image
/// (no items of images for a data-parallel rank), and an epilogue is
/// refused. The input gradient keeps its items of tile rows.
#[test]
fn winograd_few_rows_split_over_channels() {
    // A batch-1 layer of the seed CNN's size, narrower; twelve rows
    // without a bias; channels that end in a partial vector.
    let cases = [
        same_3x3([1, 7, 7, 9, 136], true),
        same_3x3([1, 3, 4, 5, 130], false),
    ];
    for case in &cases {
        let y = case.reference(&case.x, &case.w, case.b.as_deref());
        for tile in Tile::ALL {
            let what = format!("{tile:?} of {}", case.name());
            let conv = WinogradConv::new("v", &case.shape, tile, Direction::Forward).expect("3x3");
            assert_eq!(conv.domain(), 2, "{what}");
            assert_eq!(conv.kernel_reads(), 1, "{what}");
            assert_eq!(conv.example_items(1, 0..1), None, "{what}");
            let whole = case.winograd(tile, Direction::Forward, None, Split::Whole);
            assert_within(&whole, &y, WINOGRAD_RELATIVE, &what);
            let uneven = case.winograd(tile, Direction::Forward, None, Split::Uneven);
            assert_eq!(bits(&uneven), bits(&whole), "{what}");
            let data =
                WinogradConv::new("d", &case.shape, tile, Direction::BackwardData).expect("3x3");
            assert_eq!(data.kernel_reads(), data.domain(), "{what}");
            let (_jit, compiled) = relu();
            // SAFETY: the kernel has one input and one output, the product's.
            let epilogue = unsafe { Epilogue::new(&compiled, &[], &[]) };
            let u = vec![0.0; conv.lengths().1];
            let mut out = vec![0.0; conv.lengths().2];
            let buffers = WinogradBuffers {
                input: case.x.as_ptr(),
                kernel: u.as_ptr(),
                bias: case.b.as_ref().map(|b| b.as_ptr()),
                output: out.as_mut_ptr(),
            };
            let mut scratch = vec![0.0; conv.scratch_len()];
            // SAFETY: rejected before it touches the buffers.
            let refused = unsafe { conv.run(&buffers, Some(&epilogue), &mut scratch, 0..2) };
            expect_malformed(refused, "epilogue");
        }
    }
}

/// A convolution with few taps and input channels (a first layer) is
/// computed without im2col where the CPU has AVX-512, forward and kernel
/// gradient, and any split of its domain on threads gives bitwise the
/// whole domain's result; more taps, a
/// dilation, or a tap that never reads the image keep im2col.
#[test]
fn first_layers_compute_directly() {
    use Padding::Same;
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let (one, two) = ([1, 1], [2, 2]);
    for case in &direct_cases() {
        let kernel = ConvForward::new("f", &case.shape).expect("valid");
        assert_eq!(kernel.is_direct(), avx512, "{}", case.name());
        assert!(kernel.domain() >= 2, "{}", case.name());
        forward_splits_are_bitwise_whole(case, &kernel, &[0..1, 1..kernel.domain()]);
        // The kernel gradient too, by blocks of output channels.
        let gradient = ConvBackwardFilter::new("dw", &case.shape).expect("valid");
        assert_eq!(gradient.is_direct(), avx512, "{}", case.name());
        let (whole, uneven) = (
            case.backward_filter(Split::Whole),
            case.backward_filter(Split::Uneven),
        );
        assert_eq!(bits(&whole.0), bits(&uneven.0), "{}", case.name());
        assert_eq!(bits(&whole.1), bits(&uneven.1), "{}", case.name());
    }
    let im2col = [
        // 3 x 3 x 8 = 72 taps and channels.
        Case::new([1, 9, 9, 8, 16], [3, 3], one, one, Same, true),
        Case::new([1, 9, 9, 1, 16], [3, 3], one, two, Same, true),
        // The 3x3 kernel's outer taps only read the 1x1 image's padding.
        Case::new([4, 1, 1, 2, 16], [3, 3], one, one, Same, true),
    ];
    for case in &im2col {
        let kernel = ConvForward::new("f", &case.shape).expect("valid");
        assert!(!kernel.is_direct(), "{}", case.name());
        let gradient = ConvBackwardFilter::new("dw", &case.shape).expect("valid");
        assert!(!gradient.is_direct(), "{}", case.name());
    }
}

/// Tiny images, where most of im2col's taps would read padding, are
/// computed by position in blocks of images, forward and input gradient
/// (the reference checks are `conv_forward_matches_the_reference` and
/// `backward_data_matches_the_vjp`, whose cases include these), and any
/// split of the blocks gives bitwise the whole domain's result; 1x1 images
/// (one tap, no padding multiplied), larger images and small batches keep
/// im2col.
#[test]
fn tiny_images_are_computed_by_position() {
    let same = |sizes, kernel| Case::new(sizes, kernel, [1, 1], [1, 1], Padding::Same, true);
    let tiny = tiny_cases();
    for case in &tiny {
        let forward = ConvForward::new("f", &case.shape).expect("valid");
        let data = ConvBackwardData::new("d", &case.shape).expect("valid");
        assert!(
            forward.by_positions() && data.by_positions(),
            "{}",
            case.name()
        );
        assert!(forward.domain() >= 1 && data.domain() >= 1);
        let bitwise =
            |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            bitwise(
                &case.forward(None, Split::Whole),
                &case.forward(None, Split::Uneven)
            ),
            "{}: a split of the forward pass differs",
            case.name()
        );
        assert!(
            bitwise(
                &case.backward_data(Split::Whole),
                &case.backward_data(Split::Uneven)
            ),
            "{}: a split of the input gradient differs",
            case.name()
        );
    }
    // 19 images: a block of 16 and one of 3.
    let uneven = ConvForward::new("f", &tiny[1].shape).expect("valid");
    assert_eq!(uneven.domain(), 2);
    assert_eq!(uneven.item_block(1).0, 16 * 6..19 * 6);
    let kept = [
        same([16, 1, 1, 8, 5], [3, 3]),
        same([8, 2, 2, 8, 7], [3, 3]),
        same([16, 5, 5, 8, 4], [3, 3]),
    ];
    for case in &kept {
        let forward = ConvForward::new("f", &case.shape).expect("valid");
        let data = ConvBackwardData::new("d", &case.shape).expect("valid");
        assert!(
            !forward.by_positions() && !data.by_positions(),
            "{}",
            case.name()
        );
    }
}

/// `kernel`, the forward kernel of `case`, matches the reference on its
/// whole domain, and its items split into `parts`, run on a thread each at
/// once, give bitwise the same output.
fn forward_splits_are_bitwise_whole(case: &Case, kernel: &ConvForward, parts: &[Range<usize>]) {
    let expected = case.reference(&case.x, &case.w, case.b.as_deref());
    let whole = case.forward(None, Split::Whole);
    assert_close(&whole, &expected, &case.name());
    let mut y = vec![f32::NAN; whole.len()];
    let buffers = case.forward_buffers(&mut y);
    in_threads(parts, kernel.scratch_len(), |part, scratch| {
        // SAFETY: the buffers have the lengths the kernel reports; the
        // threads run disjoint items.
        unsafe { kernel.run(&buffers, None, scratch, part) }.expect("runs");
    });
    assert!(
        y.iter()
            .zip(&whole)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{}: a split differs",
        case.name()
    );
}

/// Runs `run` on every part of `parts` at once, one thread each.
fn in_threads(
    parts: &[Range<usize>],
    scratch_len: usize,
    run: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    std::thread::scope(|scope| {
        for part in parts {
            let run = &run;
            scope.spawn(move || run(part.clone(), &mut vec![0.0; scratch_len]));
        }
    });
}

/// Any split of the domain, run on several threads at once, gives bitwise
/// the result of the whole domain run on one.
#[test]
fn any_split_is_bitwise_identical() {
    let cases = [
        Case::new(
            [3, 14, 14, 13, 19],
            [3, 3],
            [1, 1],
            [1, 1],
            Padding::Same,
            true,
        ),
        // Only the centre tap reads the 1x1 images.
        Case::new(
            [40, 1, 1, 40, 5],
            [3, 3],
            [1, 1],
            [1, 1],
            Padding::Same,
            true,
        ),
        Case::dense(33, 70, 3, true),
    ];
    for case in &cases {
        let forward = ConvForward::new("f", &case.shape).expect("valid");
        let data = ConvBackwardData::new("d", &case.shape).expect("valid");
        let filter = ConvBackwardFilter::new("w", &case.shape).expect("valid");
        let domains = [forward.domain(), data.domain(), filter.domain()];
        assert!(
            domains.iter().all(|&d| d >= 3),
            "domains {domains:?} of {} are too small to split",
            case.name()
        );
        let whole = (
            case.forward(None, Split::Whole),
            case.backward_data(Split::Whole),
            case.backward_filter(Split::Whole),
        );
        let mut y = vec![f32::NAN; whole.0.len()];
        let mut dx = vec![f32::NAN; whole.1.len()];
        let mut dw = vec![f32::NAN; whole.2 .0.len()];
        let mut db = vec![f32::NAN; whole.2 .1.len()];
        let forward_buffers = ForwardBuffers {
            input: case.x.as_ptr(),
            kernel: case.w.as_ptr(),
            bias: case.b.as_ref().map(|b| b.as_ptr()),
            output: y.as_mut_ptr(),
        };
        let data_buffers = BackwardDataBuffers {
            output_grad: case.dy.as_ptr(),
            kernel: case.w.as_ptr(),
            input_grad: dx.as_mut_ptr(),
        };
        let filter_buffers = BackwardFilterBuffers {
            input: case.x.as_ptr(),
            output_grad: case.dy.as_ptr(),
            kernel_grad: dw.as_mut_ptr(),
            bias_grad: Some(db.as_mut_ptr()),
        };
        // SAFETY (all three): the parts are disjoint, and the buffers have
        // the lengths the kernels report.
        in_threads(
            &uneven(forward.domain()),
            forward.scratch_len(),
            |items, scratch| unsafe {
                forward
                    .run(&forward_buffers, None, scratch, items)
                    .expect("runs")
            },
        );
        in_threads(
            &uneven(data.domain()),
            data.scratch_len(),
            |items, scratch| unsafe {
                data.run(&data_buffers, None, scratch, items).expect("runs")
            },
        );
        in_threads(
            &uneven(filter.domain()),
            filter.scratch_len(),
            |items, scratch| unsafe { filter.run(&filter_buffers, scratch, items).expect("runs") },
        );
        assert_eq!(bits(&y), bits(&whole.0), "forward of {}", case.name());
        assert_eq!(
            bits(&dx),
            bits(&whole.1),
            "backward data of {}",
            case.name()
        );
        assert_eq!(
            bits(&dw),
            bits(&whole.2 .0),
            "backward filter of {}",
            case.name()
        );
        assert_eq!(
            bits(&db),
            bits(&whole.2 .1),
            "bias gradient of {}",
            case.name()
        );
    }
}

/// Any split of a Winograd kernel's domain, run on several threads at
/// once, gives bitwise the result of the whole domain run on one.
#[test]
fn winograd_any_split_is_bitwise_identical() {
    // With three images F(4x4) makes two items of few tiles (products in
    // registers where the CPU has AVX-512); the other kernels make four
    // items of 32 tiles and more (the `gemm` crate).
    let case = |batch| {
        Case::new(
            [batch, 14, 14, 13, 19],
            [3, 3],
            [1, 1],
            [1, 1],
            Padding::Same,
            true,
        )
    };
    for (case, tile) in [case(3), case(12)]
        .iter()
        .flat_map(|case| Tile::ALL.map(|tile| (case, tile)))
    {
        for direction in [Direction::Forward, Direction::BackwardData] {
            let whole = case.winograd(tile, direction, None, Split::Whole);
            let filter = WinogradFilter::new("u", &case.shape, tile, direction).expect("3x3");
            let conv = WinogradConv::new("v", &case.shape, tile, direction).expect("3x3");
            assert!(conv.domain() >= 2, "{tile:?}: domain {}", conv.domain());
            let mut u = vec![f32::NAN; filter.transformed_len()];
            let u_ptr = u.as_mut_ptr() as usize;
            // SAFETY: the parts are disjoint, and the buffers have the
            // lengths the kernels report.
            in_threads(&uneven(filter.domain()), 0, |items, _| unsafe {
                filter
                    .run(case.w.as_ptr(), u_ptr as *mut f32, items)
                    .expect("runs")
            });
            let source = match direction {
                Direction::Forward => &case.x,
                Direction::BackwardData | Direction::BackwardFilter => &case.dy,
            };
            let mut out = vec![f32::NAN; whole.len()];
            let buffers = WinogradBuffers {
                input: source.as_ptr(),
                kernel: u.as_ptr(),
                bias: case
                    .b
                    .as_ref()
                    .filter(|_| conv.has_bias())
                    .map(|b| b.as_ptr()),
                output: out.as_mut_ptr(),
            };
            in_threads(
                &uneven(conv.domain()),
                conv.scratch_len(),
                |items, scratch| unsafe { conv.run(&buffers, None, scratch, items).expect("runs") },
            );
            assert_eq!(bits(&out), bits(&whole), "{tile:?} {direction:?}");
        }
        let (whole_dw, whole_db) = case.winograd_backward_filter(tile, Some(7), Split::Whole);
        let (dw, db) = case.winograd_backward_filter(tile, Some(7), Split::Uneven);
        assert_eq!(bits(&dw), bits(&whole_dw), "{tile:?} dw");
        assert_eq!(bits(&db), bits(&whole_db), "{tile:?} db");
    }
}

/// The kernel gradient's items each own a group of rows of the transformed
/// positions (by default half of them, so that each transforms every tile
/// twice rather than once per row): any grouping, split unevenly over
/// threads, gives bitwise what items of one row give, in one chunk of
/// tiles and in several, with and without a bias.
#[test]
fn winograd_kernel_gradient_rows_group_bitwise() {
    for bias in [true, false] {
        let case = Case::new(
            [5, 13, 11, 21, 35],
            [3, 3],
            [1, 1],
            [1, 1],
            Padding::Same,
            bias,
        );
        for tile in Tile::ALL {
            for chunk in [None, Some(7)] {
                let run = |rows: Option<usize>| {
                    let mut product =
                        WinogradBackwardFilter::new("dw", &case.shape, tile).expect("3x3");
                    if let Some(tiles) = chunk {
                        product = product.with_chunk(tiles);
                    }
                    if let Some(rows) = rows {
                        product = product.with_rows(rows);
                    }
                    let parts = uneven(product.domain());
                    let (du, db) = case.winograd_transformed_gradient(&product, &parts);
                    (product.domain(), bits(&du), bits(&db))
                };
                let (domain, du, db) = run(Some(1));
                assert_eq!(domain, tile.input() + usize::from(bias));
                let (default_domain, ..) = run(None);
                assert_eq!(default_domain, 2 + usize::from(bias), "{tile:?}");
                for rows in (2..=tile.input()).map(Some).chain([None]) {
                    let what = format!("{tile:?}, {rows:?} rows, chunk {chunk:?}, bias {bias}");
                    let (_, grouped_du, grouped_db) = run(rows);
                    assert_eq!(grouped_du, du, "dU: {what}");
                    if bias {
                        assert_eq!(grouped_db, db, "bias: {what}");
                    }
                }
            }
        }
    }
}

fn expect_malformed<T: std::fmt::Debug>(result: Result<T, CodegenError>, mentions: &str) {
    match result {
        Err(CodegenError::Malformed { message, .. }) => assert!(
            message.contains(mentions),
            "the message `{message}` does not mention `{mentions}`"
        ),
        other => panic!("expected a malformed-kernel error about {mentions}, got {other:?}"),
    }
}

#[test]
fn malformed_descriptions_are_errors() {
    let good = Case::new([1, 5, 5, 3, 4], [3, 3], [1, 1], [1, 1], Padding::Same, true).shape;
    let variants: [(ConvShape, &str); 7] = [
        (ConvShape { batch: 0, ..good }, "batch"),
        (
            ConvShape {
                in_channels: 0,
                ..good
            },
            "input channels",
        ),
        (
            ConvShape {
                out_channels: 0,
                ..good
            },
            "output channels",
        ),
        (
            ConvShape {
                kernel: [3, 0],
                ..good
            },
            "kernel width",
        ),
        (
            ConvShape {
                stride: [0, 1],
                ..good
            },
            "stride",
        ),
        (
            ConvShape {
                dilation: [1, 0],
                ..good
            },
            "dilation",
        ),
        (
            ConvShape {
                kernel: [7, 7],
                padding: Padding::Valid,
                ..good
            },
            "does not fit",
        ),
    ];
    for (shape, mentions) in variants {
        expect_malformed(ConvForward::new("f", &shape), mentions);
        expect_malformed(ConvBackwardData::new("d", &shape), mentions);
        expect_malformed(ConvBackwardFilter::new("w", &shape), mentions);
        for direction in [Direction::Forward, Direction::BackwardData] {
            let filter = WinogradFilter::new("u", &shape, Tile::F4, direction);
            expect_malformed(filter, mentions);
            expect_malformed(
                WinogradConv::new("v", &shape, Tile::F2, direction),
                mentions,
            );
        }
        expect_malformed(WinogradBackwardFilter::new("w", &shape, Tile::F2), mentions);
        expect_malformed(WinogradFilterGradient::new("g", &shape, Tile::F4), mentions);
    }
    let filter = WinogradFilter::new("u", &good, Tile::F2, Direction::BackwardFilter);
    expect_malformed(filter, "not a convolution of the layer");
    let conv = WinogradConv::new("v", &good, Tile::F2, Direction::BackwardFilter);
    expect_malformed(conv, "not a convolution of the layer");
    let not_winograd = [
        ConvShape {
            kernel: [5, 5],
            ..good
        },
        ConvShape {
            stride: [1, 2],
            ..good
        },
        ConvShape {
            dilation: [2, 2],
            ..good
        },
    ];
    for shape in not_winograd {
        let filter = WinogradFilter::new("u", &shape, Tile::F4, Direction::Forward);
        expect_malformed(filter, "3x3 kernel, stride 1 and dilation 1");
        let conv = WinogradConv::new("v", &shape, Tile::F4, Direction::BackwardData);
        expect_malformed(conv, "3x3 kernel, stride 1 and dilation 1");
        let product = WinogradBackwardFilter::new("w", &shape, Tile::F2);
        expect_malformed(product, "3x3 kernel, stride 1 and dilation 1");
    }
    let huge = ConvShape {
        batch: 1 << 30,
        height: 1 << 30,
        ..good
    };
    expect_malformed(ConvForward::new("f", &huge), "overflow");
    let dense = DenseShape {
        rows: 4,
        inputs: 3,
        units: 0,
        bias: false,
    };
    expect_malformed(ConvForward::dense("dense", &dense), "output channels");
}

#[test]
fn bad_calls_are_errors() {
    let case = Case::new([1, 5, 5, 3, 4], [3, 3], [1, 1], [1, 1], Padding::Same, true);
    let kernel = ConvForward::new("f", &case.shape).expect("valid");
    let mut y = vec![0.0; kernel.lengths().output];
    let buffers = case.forward_buffers(&mut y);
    let mut scratch = vec![0.0; kernel.scratch_len()];
    let domain = kernel.domain();
    // SAFETY: the buffers have the lengths the kernel reports; every call
    // is rejected before it touches them.
    unsafe {
        expect_malformed(
            kernel.run(&buffers, None, &mut scratch, 0..domain + 1),
            "domain",
        );
        let no_bias = ForwardBuffers {
            bias: None,
            ..buffers
        };
        expect_malformed(kernel.run(&no_bias, None, &mut scratch, 0..domain), "bias");
        expect_malformed(kernel.run(&buffers, None, &mut [], 0..domain), "scratch");
    }
}

#[test]
fn bad_winograd_calls_are_errors() {
    let case = Case::new([1, 5, 5, 3, 4], [3, 3], [1, 1], [1, 1], Padding::Same, true);
    let filter = WinogradFilter::new("u", &case.shape, Tile::F2, Direction::Forward).expect("3x3");
    let conv = WinogradConv::new("v", &case.shape, Tile::F2, Direction::Forward).expect("3x3");
    let mut u = vec![0.0; filter.transformed_len()];
    let mut y = vec![0.0; conv.lengths().2];
    let buffers = WinogradBuffers {
        input: case.x.as_ptr(),
        kernel: u.as_ptr(),
        bias: case.b.as_ref().map(|b| b.as_ptr()),
        output: y.as_mut_ptr(),
    };
    let mut scratch = vec![0.0; conv.scratch_len()];
    let domain = conv.domain();
    // SAFETY: the buffers have the lengths the kernels report; every call
    // is rejected before it touches them.
    unsafe {
        let beyond = filter.domain() + 1;
        expect_malformed(
            filter.run(case.w.as_ptr(), u.as_mut_ptr(), 0..beyond),
            "domain",
        );
        expect_malformed(
            conv.run(&buffers, None, &mut scratch, 0..domain + 1),
            "domain",
        );
        let no_bias = WinogradBuffers {
            bias: None,
            ..buffers
        };
        expect_malformed(conv.run(&no_bias, None, &mut scratch, 0..domain), "bias");
        expect_malformed(conv.run(&buffers, None, &mut [], 0..domain), "scratch");
    }
}

#[test]
fn bad_winograd_gradient_calls_are_errors() {
    let case = Case::new([1, 5, 5, 3, 4], [3, 3], [1, 1], [1, 1], Padding::Same, true);
    let product = WinogradBackwardFilter::new("w", &case.shape, Tile::F4).expect("3x3");
    let transform = WinogradFilterGradient::new("g", &case.shape, Tile::F4).expect("3x3");
    let mut du = vec![0.0; product.lengths().2];
    let mut dw = vec![0.0; transform.kernel_len()];
    let mut db = vec![0.0; case.shape.out_channels];
    let buffers = BackwardFilterBuffers {
        input: case.x.as_ptr(),
        output_grad: case.dy.as_ptr(),
        kernel_grad: du.as_mut_ptr(),
        bias_grad: Some(db.as_mut_ptr()),
    };
    let mut scratch = vec![0.0; product.scratch_len()];
    let domain = product.domain();
    // SAFETY: the buffers have the lengths the kernels report; every call
    // is rejected before it touches them.
    unsafe {
        expect_malformed(product.run(&buffers, &mut scratch, 0..domain + 1), "domain");
        let no_bias = BackwardFilterBuffers {
            bias_grad: None,
            ..buffers
        };
        expect_malformed(product.run(&no_bias, &mut scratch, 0..domain), "bias");
        expect_malformed(product.run(&buffers, &mut [], 0..domain), "scratch");
        let beyond = transform.domain() + 1;
        expect_malformed(
            transform.run(du.as_ptr(), dw.as_mut_ptr(), 0..beyond),
            "domain",
        );
    }
}
