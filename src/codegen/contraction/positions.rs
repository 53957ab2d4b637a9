//! Convolutions of tiny images, one product per pair of positions: on a
//! 2x2 image a 3x3 kernel has nine active taps, but each output position
//! reads only four of them, so im2col and its GEMM multiply zeros for
//! five ninths of their work (ResNet-34's third stage at 28x28 inputs ran
//! at 96 useful GFLOP/s behind im2col, `docs/performance.md`). Here every
//! (destination position, source position, tap) that connects two
//! positions of the image is one product over a block of images: the
//! rows of one position in each image are a strided view of the tensor,
//! so nothing is copied and no padding is multiplied.

use std::ops::Range;

use super::geometry::Geometry;
use super::matmul::{matmul, sum_small_rows, Operand};

/// Images of at most this many output positions are computed by position
/// when that saves enough (see [`Positions::new`]).
const MAX_POSITIONS: usize = 16;

/// The share of the im2col product's taps that must be padding for the
/// positions to be worth their smaller products.
const MAX_USEFUL: f64 = 0.6;

/// Fewer images than this per item make products of too few rows (the
/// few-row product re-reads the weights once per call).
const MIN_IMAGES: usize = 16;

/// The connections of a convolution's positions, by destination position:
/// for the forward pass the output positions, each with the input
/// positions and taps it reads; for the input gradient the input
/// positions, each with the output positions and taps that read it.
#[derive(Debug, Clone)]
pub(super) struct Positions {
    /// `pairs[d]`: the `(source position, tap)` pairs of destination
    /// position `d`, taps in increasing order (the order of the sum).
    pairs: Vec<Vec<(usize, usize)>>,
    /// Images per item.
    images: usize,
}

/// Which product the positions are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// Output positions from input positions.
    Forward,
    /// Input-gradient positions from output-gradient positions.
    BackwardData,
}

impl Positions {
    /// The positions of `g` for `side`, when the layer's images are tiny
    /// and most of the im2col product's taps read padding, and the batch
    /// is large enough for products of [`MIN_IMAGES`] rows.
    pub(super) fn new(g: &Geometry, side: Side) -> Option<Positions> {
        let s = &g.shape;
        let outputs = g.y.output * g.x.output;
        if g.pointwise || outputs > MAX_POSITIONS || s.batch < MIN_IMAGES {
            return None;
        }
        let inputs = s.height * s.width;
        let mut pairs = vec![
            Vec::new();
            if side == Side::Forward {
                outputs
            } else {
                inputs
            }
        ];
        let mut useful = 0;
        for (oy, ox) in (0..g.y.output).flat_map(|oy| (0..g.x.output).map(move |ox| (oy, ox))) {
            for ky in 0..s.kernel[0] {
                let Some(iy) = g.y.source(oy, ky) else {
                    continue;
                };
                for kx in 0..s.kernel[1] {
                    let Some(ix) = g.x.source(ox, kx) else {
                        continue;
                    };
                    let (output, input, tap) = (
                        oy * g.x.output + ox,
                        iy * s.width + ix,
                        ky * s.kernel[1] + kx,
                    );
                    match side {
                        Side::Forward => pairs[output].push((input, tap)),
                        Side::BackwardData => pairs[input].push((output, tap)),
                    }
                    useful += 1;
                }
            }
        }
        let im2col = outputs * g.y_taps.len() * g.x_taps.len();
        if useful as f64 > MAX_USEFUL * im2col as f64 {
            return None;
        }
        // The pairs were found in output order; the sum of each
        // destination goes by tap.
        for list in &mut pairs {
            list.sort_by_key(|&(_, tap)| tap);
        }
        let images = s.batch.div_ceil(super::TARGET_ITEMS).max(MIN_IMAGES);
        Some(Positions { pairs, images })
    }

    /// The products' multiply-adds per image and pair of channels: the
    /// pairs of positions.
    pub(super) fn pairs(&self) -> usize {
        self.pairs.iter().map(Vec::len).sum()
    }

    /// The number of items: blocks of images.
    pub(super) fn domain(&self, batch: usize) -> usize {
        batch.div_ceil(self.images)
    }

    /// The images of each item (the last may have fewer).
    pub(super) fn images_per_item(&self) -> usize {
        self.images
    }

    /// The images of item `item`.
    pub(super) fn images(&self, item: usize, batch: usize) -> Range<usize> {
        (item * self.images).min(batch)..((item + 1) * self.images).min(batch)
    }

    /// The f32s of scratch the input gradient needs: one position's
    /// gradient for an item's images, column-major ([`sum_small_rows`]).
    pub(super) fn scratch_floats(&self, g: &Geometry) -> usize {
        self.images * g.shape.in_channels
    }

    /// The forward product of images `images`: every output position is
    /// the bias (or zero) plus its products in tap order.
    ///
    /// # Safety
    /// `input`, `kernel`, `bias` and `output` hold the f32s `g` gives; the
    /// output rows of these images are the caller's alone.
    pub(super) unsafe fn forward(
        &self,
        g: &Geometry,
        images: Range<usize>,
        input: *const f32,
        kernel: *const f32,
        bias: Option<&[f32]>,
        output: *mut f32,
    ) {
        let s = &g.shape;
        let (cin, cout) = (s.in_channels, s.out_channels);
        let (inputs, outputs) = (s.height * s.width, g.y.output * g.x.output);
        let m = images.len();
        for (d, pairs) in self.pairs.iter().enumerate() {
            let dst = output.wrapping_add((images.start * outputs + d) * cout);
            let dst_stride = outputs * cout;
            if bias.is_some() || pairs.is_empty() {
                for image in 0..m {
                    // SAFETY: this image's row of position `d` is the
                    // caller's.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(dst.add(image * dst_stride), cout)
                    };
                    match bias {
                        Some(bias) => row.copy_from_slice(bias),
                        None => row.fill(0.0),
                    }
                }
            }
            for (i, &(source, tap)) in pairs.iter().enumerate() {
                let lhs = Operand::rows(
                    input.wrapping_add((images.start * inputs + source) * cin),
                    inputs * cin,
                );
                let rhs = Operand::rows(kernel.wrapping_add(tap * cin * cout), cout);
                // SAFETY: the operands address these images' rows of the
                // source position and the tap's weights; the destination
                // rows are the caller's.
                unsafe {
                    matmul(
                        (m, cout, cin),
                        dst,
                        dst_stride,
                        lhs,
                        rhs,
                        bias.is_some() || i > 0,
                    )
                };
            }
        }
    }

    /// The input gradient of images `images`: every input position sums
    /// the products of the output positions that read it, in tap order
    /// (zero where none does).
    ///
    /// # Safety
    /// `output_grad`, `kernel` and `input_grad` hold the f32s `g` gives;
    /// `scratch` holds [`Self::scratch_floats`]; the input-gradient rows of
    /// these images are the caller's alone.
    pub(super) unsafe fn backward_data(
        &self,
        g: &Geometry,
        images: Range<usize>,
        output_grad: *const f32,
        kernel: *const f32,
        input_grad: *mut f32,
        scratch: &mut [f32],
    ) {
        let s = &g.shape;
        let (cin, cout) = (s.in_channels, s.out_channels);
        let (inputs, outputs) = (s.height * s.width, g.y.output * g.x.output);
        let m = images.len();
        for (d, pairs) in self.pairs.iter().enumerate() {
            let terms = pairs.iter().map(|&(source, tap)| {
                (
                    Operand::rows(
                        output_grad.wrapping_add((images.start * outputs + source) * cout),
                        outputs * cout,
                    ),
                    Operand::transposed(kernel.wrapping_add(tap * cin * cout), cout),
                )
            });
            let dst = input_grad.wrapping_add((images.start * inputs + d) * cin);
            // SAFETY: the operands address these images' rows of the
            // output gradient and the taps' weights, read transposed; the
            // destination rows are the caller's; the scratch holds m x cin.
            unsafe { sum_small_rows((m, cin, cout), dst, inputs * cin, terms, scratch) };
        }
    }
}
