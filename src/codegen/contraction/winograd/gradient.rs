//! The kernel gradient of a 3x3 stride-1 convolution by Winograd's
//! transforms ([`Direction::BackwardFilter`]).
//!
//! The forward pass computes `Y = Aᵀ [Σ_r U_r ⊙ V_r] A` for each tile, with
//! `U = G g Gᵀ` and `V = Bᵀ d B`; it is linear in `U`, and `U` in `g`, so
//! the kernel gradient is the transpose of each step: the output
//! gradient's tiles transformed by `A` (`A dY Aᵀ`), multiplied by the
//! transformed input and summed over every tile of the batch (one GEMM per
//! transformed position, over the tiles: `dU[ξ] = V[ξ]ᵀ · (A dY Aᵀ)[ξ]`),
//! then `dg = Gᵀ dU G`. [`WinogradBackwardFilter`] computes `dU` (and the
//! bias gradient), [`WinogradFilterGradient`] transforms it into the
//! layer's kernel gradient (its own plan step, so that the memory planner
//! places `dU`).

use std::ops::Range;

use super::lanes::{
    load_grid, load_tile, over_channels, transform_2d, transform_rows, ChannelBlock, FilterGradF2,
    FilterGradF4, InputF2, InputF4, Lanes, OutputGradF2, OutputGradF4, Transform,
};
use super::{Direction, Tile, TransformSizes, SCRATCH_TARGET};
use crate::codegen::contraction::matmul::{matmul, Operand};
use crate::codegen::contraction::{
    bias_gradient, scratch_for, BackwardFilterBuffers, Call, ConvShape, ALIGN_FLOATS,
};
use crate::codegen::CodegenError;

/// The buffers of a [`WinogradBackwardFilter`], in the terms of
/// [`BackwardFilterBuffers`] with `kernel_grad` the gradient of the
/// transformed kernel (`a²` times both channel counts).
pub type WinogradGradientBuffers = BackwardFilterBuffers;

/// The fewest tiles a chunk aims for, whatever the scratch: the inner
/// dimension of its GEMMs. Chunks are then evened out, so one may sum
/// fewer (two chunks of 33 rather than 64 and 1).
const MIN_CHUNK_TILES: usize = 64;

/// How many items the rows of the transformed positions are split into.
/// Each item transforms its rows of every tile of the batch, and so reads
/// the whole input and output gradient (from the last-level cache, for a
/// batch of 32): six items of one row each (F(4x4)) read them six times,
/// and the 2-D transforms' first pass, down the columns, ran once per row.
/// Two items balance on two threads; see `docs/performance.md`.
const ROW_ITEMS: usize = 2;

/// The gradient of the transformed kernel, `dU[r][ξ][c] = Σ_t V[ξ][t][r] ·
/// (A dY Aᵀ)[ξ][t][c]` over every tile `t` of the batch, and the bias
/// gradient. `dU` keeps the positions of one input channel together (unlike
/// the forward pass's `U[ξ][r][c]`), so that [`WinogradFilterGradient`]
/// reads each input channel's `a² x out` block in one sequential sweep.
///
/// Domain: groups of rows of the `a x a` transformed positions, then the
/// bias gradient (when the layer has a bias). Item `i` writes `dU[ξ]` for
/// the positions of its rows: it transforms those rows of every tile's
/// input and output gradient, a chunk of tiles at a time, and adds each
/// chunk's products to its positions in order, so the sums depend neither
/// on how the domain is split nor on how the rows are grouped.
#[derive(Debug, Clone)]
pub struct WinogradBackwardFilter {
    /// The layer's plane, the tile and the length of `dU`.
    sizes: TransformSizes,
    bias: bool,
    /// Tiles per chunk.
    chunk: usize,
    /// Rows of transformed positions per item.
    rows: usize,
}

impl WinogradBackwardFilter {
    /// The kernel-gradient product of convolution `shape` with tile `tile`;
    /// `name` names it in errors.
    pub fn new(
        name: &str,
        shape: &ConvShape,
        tile: Tile,
    ) -> Result<WinogradBackwardFilter, CodegenError> {
        let sizes = TransformSizes::new(name, shape, tile, Direction::BackwardFilter)?;
        let plane = &sizes.plane;
        let per_tile = tile.input() * (plane.source_channels + plane.destination_channels);
        // As few chunks as fit the scratch, all of one size: a last chunk
        // of a few tiles would cost a whole pass over `dU` for little work
        // (the seed CNN's conv3 at batch 32 summed 170 + 170 + 170 + 2).
        let most = (SCRATCH_TARGET / per_tile.max(1)).max(MIN_CHUNK_TILES);
        let total = plane.tile_count(tile).max(1);
        let chunk = total.div_ceil(total.div_ceil(most));
        Ok(WinogradBackwardFilter {
            sizes,
            bias: shape.bias,
            chunk,
            rows: tile.input().div_ceil(ROW_ITEMS),
        })
    }

    /// The same kernel summing `tiles` tiles per chunk (at least 1): the
    /// sums run in a different order, so the results differ by rounding.
    /// For tests of the sums over several chunks.
    pub fn with_chunk(mut self, tiles: usize) -> WinogradBackwardFilter {
        self.chunk = tiles.clamp(1, self.sizes.plane.tile_count(self.sizes.tile).max(1));
        self
    }

    /// The same kernel with `rows` rows of transformed positions an item
    /// (1 to `a`): bitwise the same results. For tests of the grouping.
    pub fn with_rows(mut self, rows: usize) -> WinogradBackwardFilter {
        self.rows = rows.clamp(1, self.sizes.tile.input());
        self
    }

    /// The items that own rows of transformed positions.
    fn row_items(&self) -> usize {
        self.sizes.tile.input().div_ceil(self.rows)
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        self.row_items() + usize::from(self.bias)
    }

    /// How many chunks of tiles each row's sums run over.
    pub fn chunks(&self) -> usize {
        self.sizes
            .plane
            .tile_count(self.sizes.tile)
            .div_ceil(self.chunk)
    }

    /// Whether the kernel computes a bias gradient (and so takes a buffer
    /// for it).
    pub fn has_bias(&self) -> bool {
        self.bias
    }

    /// The lengths in f32s of the input, the output gradient and the
    /// transformed kernel's gradient.
    pub fn lengths(&self) -> (usize, usize, usize) {
        (
            self.sizes.plane.source_len(),
            self.sizes.plane.destination_len(),
            self.sizes.transformed_len,
        )
    }

    /// The f32s of scratch one thread needs to run any range of items.
    pub fn scratch_len(&self) -> usize {
        let (v, m) = self.scratch_parts(self.chunk);
        scratch_for(v + m)
    }

    /// Runs items `items`.
    ///
    /// # Safety
    /// Each buffer must hold the f32s [`Self::lengths`] gives (the bias
    /// gradient the output channels); the gradients must not overlap the
    /// other buffers or each other. Calls running at the same time on the
    /// same gradients must be given disjoint item ranges.
    pub unsafe fn run(
        &self,
        buffers: &WinogradGradientBuffers,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        let call = Call {
            name: &self.sizes.name,
            domain: self.domain(),
            bias: Some((self.bias, buffers.bias_grad.is_some())),
            scratch_len: self.scratch_len(),
        };
        let scratch = call.check(&items, scratch)?;
        let p = &self.sizes.plane;
        // SAFETY: the caller's contract: both are only read.
        let (input, output_grad) = unsafe {
            (
                std::slice::from_raw_parts(buffers.input, p.source_len()),
                std::slice::from_raw_parts(buffers.output_grad, p.destination_len()),
            )
        };
        for item in items {
            match buffers.bias_grad {
                Some(bias_grad) if item == self.row_items() => {
                    let cout = p.destination_channels;
                    // SAFETY: the bias gradient holds `cout` f32s and
                    // belongs to this item alone.
                    let bias_grad = unsafe { std::slice::from_raw_parts_mut(bias_grad, cout) };
                    bias_gradient(output_grad, cout, bias_grad);
                }
                // SAFETY: the caller's contract, passed on.
                _ => unsafe { self.item(input, output_grad, buffers.kernel_grad, scratch, item) },
            }
        }
        Ok(())
    }

    /// The f32s of the transformed input's and output gradient's rows (an
    /// item's) for `tiles` tiles, each rounded up to whole 64-byte lines.
    fn scratch_parts(&self, tiles: usize) -> (usize, usize) {
        let a = self.sizes.tile.input() * self.rows;
        let v = (a * tiles * self.sizes.plane.source_channels).next_multiple_of(ALIGN_FLOATS);
        let m = (a * tiles * self.sizes.plane.destination_channels).next_multiple_of(ALIGN_FLOATS);
        (v, m)
    }

    /// The rows of `dU` that item `item` owns: chunk by chunk, those rows
    /// of the transforms, then one product per position of the rows, added
    /// to the earlier chunks'.
    ///
    /// # Safety
    /// The contract of [`Self::run`], with `item < row_items()`; `scratch`
    /// holds `scratch_len() - ALIGN_FLOATS` f32s.
    unsafe fn item(
        &self,
        input: &[f32],
        output_grad: &[f32],
        transformed_grad: *mut f32,
        scratch: &mut [f32],
        item: usize,
    ) {
        let p = &self.sizes.plane;
        let a = self.sizes.tile.input();
        let rows = item * self.rows..((item + 1) * self.rows).min(a);
        let (cin, cout) = (p.source_channels, p.destination_channels);
        let total = p.tile_count(self.sizes.tile);
        for (n, first) in (0..total).step_by(self.chunk).enumerate() {
            let tiles = first..(first + self.chunk).min(total);
            let count = tiles.len();
            let (v_len, _) = self.scratch_parts(count);
            let (v, m) = scratch.split_at_mut(v_len);
            self.transform(input, &tiles, &rows, v, Side::Input);
            self.transform(output_grad, &tiles, &rows, m, Side::OutputGrad);
            for (k, i) in rows.clone().enumerate() {
                for j in 0..a {
                    let at = k * a + j;
                    let lhs = Operand::transposed(v[at * count * cin..].as_ptr(), cin);
                    let rhs = Operand::rows(m[at * count * cout..].as_ptr(), cout);
                    // SAFETY: position `(i, j)` of `dU` (its `cin` rows of
                    // `cout` f32s, `a² * cout` apart) belongs to this item
                    // alone; the operands are this position's blocks of the
                    // scratch.
                    unsafe {
                        matmul(
                            (cin, cout, count),
                            transformed_grad.add((i * a + j) * cout),
                            a * a * cout,
                            lhs,
                            rhs,
                            n > 0,
                        )
                    };
                }
            }
        }
    }

    /// Rows `rows` of the transform of `side` for the tiles `tiles`
    /// (counted over the batch), into `out[k][j][t][c]` (`k` counts the
    /// rows and `t` the tiles from 0).
    fn transform(
        &self,
        values: &[f32],
        tiles: &Range<usize>,
        rows: &Range<usize>,
        out: &mut [f32],
        side: Side,
    ) {
        let p = &self.sizes.plane;
        let across = p.tiles(self.sizes.tile)[1];
        let channels = match side {
            Side::Input => p.source_channels,
            Side::OutputGrad => p.destination_channels,
        };
        for (t, tile) in tiles.clone().enumerate() {
            let (tile_row, tx) = (tile / across, tile % across);
            let mut block = RowBlock {
                values,
                out: &mut *out,
                input: p.input_pixels(self.sizes.tile, tile_row, tx),
                output: p.output_pixels(self.sizes.tile, tile_row, tx, 0),
                tile: self.sizes.tile,
                side,
                rows: rows.clone(),
                t,
                tiles: tiles.len(),
                channels,
            };
            over_channels(&mut block, channels, self.sizes.vectors);
        }
    }
}

/// Which tensor [`WinogradBackwardFilter::transform`] transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The layer's input: `Bᵀ d B` of the `a x a` input tile.
    Input,
    /// The output gradient: `A dY Aᵀ` of the `m x m` output tile.
    OutputGrad,
}

/// One tile's row of a transform, a block of channels at a time.
struct RowBlock<'a> {
    values: &'a [f32],
    out: &'a mut [f32],
    /// Where the input tile's positions are, for [`Side::Input`].
    input: [[Option<usize>; 6]; 6],
    /// Where the output tile's positions are, for [`Side::OutputGrad`].
    output: [[Option<usize>; 4]; 4],
    tile: Tile,
    side: Side,
    rows: Range<usize>,
    t: usize,
    tiles: usize,
    channels: usize,
}

impl ChannelBlock for RowBlock<'_> {
    #[inline(always)]
    fn run<V: Lanes>(&mut self, c: usize) {
        match (self.side, self.tile) {
            (Side::Input, Tile::F2) => self.input::<V, InputF2, 4>(c),
            (Side::Input, Tile::F4) => self.input::<V, InputF4, 6>(c),
            (Side::OutputGrad, Tile::F2) => self.output_grad::<V, OutputGradF2, 2, 4>(c),
            (Side::OutputGrad, Tile::F4) => self.output_grad::<V, OutputGradF4, 4, 6>(c),
        }
    }
}

impl RowBlock<'_> {
    /// Rows `rows` of `Bᵀ d B` for channels `c..c + V::WIDTH`.
    #[inline(always)]
    fn input<V: Lanes, F: Transform<A, A>, const A: usize>(&mut self, c: usize) {
        let d = load_tile::<V, A, 6>(self.values, &self.input, c);
        let rows = transform_rows::<V, F, A, A>(self.rows.clone(), &d);
        self.store(&rows, c);
    }

    /// Rows `rows` of `A dY Aᵀ` for channels `c..c + V::WIDTH`.
    #[inline(always)]
    fn output_grad<V: Lanes, F: Transform<M, A>, const M: usize, const A: usize>(
        &mut self,
        c: usize,
    ) {
        let dy = load_tile::<V, M, 4>(self.values, &self.output, c);
        let rows = transform_rows::<V, F, M, A>(self.rows.clone(), &dy);
        self.store(&rows, c);
    }

    /// Stores position `(i, j)` of the tile, for each row `i` in `rows`, at
    /// `out[k][j][t][c..]` (`k = i - rows.start`).
    #[inline(always)]
    fn store<V: Lanes, const A: usize>(&mut self, rows: &[[V; A]; A], c: usize) {
        for (k, row) in rows[self.rows.clone()].iter().enumerate() {
            for (j, value) in row.iter().enumerate() {
                let at = ((k * A + j) * self.tiles + self.t) * self.channels + c;
                value.store(&mut self.out[at..]);
            }
        }
    }
}

/// The kernel gradient from the transformed kernel's gradient: `dg[r][c] =
/// Gᵀ dU[r][·][c] G` for every pair of channels, into the layer's kernel
/// gradient `[3, 3, in, out]`.
///
/// Domain: the input channels; item `r` writes `dg[·][r][·]`.
#[derive(Debug, Clone)]
pub struct WinogradFilterGradient {
    sizes: TransformSizes,
}

impl WinogradFilterGradient {
    /// The transform of the kernel gradient of convolution `shape` with
    /// tile `tile`; `name` names it in errors.
    pub fn new(
        name: &str,
        shape: &ConvShape,
        tile: Tile,
    ) -> Result<WinogradFilterGradient, CodegenError> {
        Ok(WinogradFilterGradient {
            sizes: TransformSizes::new(name, shape, tile, Direction::BackwardFilter)?,
        })
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        self.sizes.domain()
    }

    /// The length in f32s of the layer's kernel gradient.
    pub fn kernel_len(&self) -> usize {
        self.sizes.kernel_len()
    }

    /// The length in f32s of the transformed kernel's gradient.
    pub fn transformed_len(&self) -> usize {
        self.sizes.transformed_len
    }

    /// Transforms the rows `items` of `transformed_grad`
    /// (`transformed_len()` f32s) into `kernel_grad` (`kernel_len()`
    /// f32s).
    ///
    /// # Safety
    /// The buffers hold the f32s given above and do not overlap; calls
    /// running at the same time on the same output must be given disjoint
    /// item ranges.
    pub unsafe fn run(
        &self,
        transformed_grad: *const f32,
        kernel_grad: *mut f32,
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        self.sizes.check(&items)?;
        // SAFETY: the caller's contract: the transformed gradient is only
        // read.
        let transformed =
            unsafe { std::slice::from_raw_parts(transformed_grad, self.sizes.transformed_len) };
        for r in items {
            let mut block = GradientBlock {
                transformed,
                kernel_grad,
                tile: self.sizes.tile,
                rows: self.sizes.plane.source_channels,
                cols: self.sizes.plane.destination_channels,
                r,
            };
            over_channels(
                &mut block,
                self.sizes.plane.destination_channels,
                self.sizes.vectors,
            );
        }
        Ok(())
    }
}

/// One input channel's row of [`WinogradFilterGradient`], a block of
/// output channels at a time.
struct GradientBlock<'a> {
    transformed: &'a [f32],
    kernel_grad: *mut f32,
    tile: Tile,
    rows: usize,
    cols: usize,
    r: usize,
}

impl ChannelBlock for GradientBlock<'_> {
    #[inline(always)]
    fn run<V: Lanes>(&mut self, c: usize) {
        match self.tile {
            Tile::F2 => self.block::<V, FilterGradF2, 4>(c),
            Tile::F4 => self.block::<V, FilterGradF4, 6>(c),
        }
    }
}

impl GradientBlock<'_> {
    /// `Gᵀ dU G` for output channels `c..c + V::WIDTH`.
    #[inline(always)]
    fn block<V: Lanes, F: Transform<A, 3>, const A: usize>(&mut self, c: usize) {
        let (rows, cols, r) = (self.rows, self.cols, self.r);
        // Position `(k, l)` of row `r` is at `dU[r][k][l][c]`.
        let du = load_grid::<V, A>(self.transformed, r * A * A * cols + c, cols);
        let columns = transform_2d::<V, F, A, 3>(du);
        for ky in 0..3 {
            for (kx, column) in columns.iter().enumerate() {
                let at = ((ky * 3 + kx) * rows + r) * cols + c;
                // SAFETY: row `r` of every tap belongs to this item alone
                // (the contract of `run`), and `at + V::WIDTH` is at most
                // the kernel gradient's length.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(self.kernel_grad.add(at), V::WIDTH) };
                column[ky].store(out);
            }
        }
    }
}
