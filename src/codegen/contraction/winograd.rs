//! Winograd's minimal filtering for 3x3 stride-1 convolutions (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! F(m x m, 3 x 3) computes an `m x m` tile of outputs from an `a x a` tile
//! of inputs (`a = m + 2`) with `a²` multiplications per pair of channels
//! instead of `9 m²`: the input tile is transformed (`V = Bᵀ d B`), the
//! kernel too (`U = G g Gᵀ`), they are multiplied element by element and
//! summed over the input channels, and the sum is transformed back
//! (`Y = Aᵀ M A`). Summing over channels for each of the `a²` positions is
//! a matrix product, `M[ξ] = V[ξ] · U[ξ]` (tiles by input channels, times
//! input channels by output channels), so the multiplications run on the
//! same GEMM as the im2col kernels, and the transforms are the packing and
//! the epilogue around it. F(2x2, 3x3) saves 2.25x the multiplications,
//! F(4x4, 3x3) 4x; its larger transform constants cost accuracy (the
//! tolerance and why it is safe for training are in `docs/performance.md`).
//!
//! The same kernel computes a layer's input gradient: for a stride-1 3x3
//! convolution it is a convolution of the output gradient with the kernel
//! rotated by 180 degrees and its channels swapped, padded by `2 - p`
//! where the forward pass was padded by `p` ([`Direction::BackwardData`]).
//!
//! The kernel gradient is the transpose of the forward computation: for
//! each pair of channels and each transformed position, `dU = Σ V ⊙ (A dY
//! Aᵀ)` over the tiles of the batch (one GEMM per position, summing over
//! the tiles), then `dg = Gᵀ dU G` ([`Direction::BackwardFilter`], in
//! `gradient.rs`).
//!
//! Two kernels for the convolutions: [`WinogradFilter`] transforms a
//! layer's kernel into `U` (its own plan step, so that the memory planner
//! places `U`), and [`WinogradConv`] runs the rest. Like the im2col kernels, each works over
//! a domain of items whose computation does not depend on how the domain
//! is split, so the results are bitwise the same on any number of threads.

use std::ops::Range;

mod gradient;
mod lanes;

pub use self::gradient::{WinogradBackwardFilter, WinogradFilterGradient};

use self::lanes::{
    load_grid, load_tile, over_channel_range, over_channels, transform_2d, ChannelBlock, FilterF2,
    FilterF4, InputF2, InputF4, Lanes, OutputF2, OutputF4, Transform, Vectors,
};
use super::direct::{self, Start};
use super::geometry::Geometry;
use super::matmul::{matmul, Operand};
use super::{
    forward_splits_columns, scratch_for, Call, ConvShape, Epilogue, ForwardBuffers, ALIGN_FLOATS,
};
use crate::codegen::CodegenError;
use crate::graph::AxisPadding;

/// Which Winograd algorithm: the size of the output tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 products per pair of channels for
    /// 4 outputs (36 directly).
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 products for 16 outputs (144
    /// directly).
    F4,
}

impl Tile {
    /// Every tile, smallest first.
    pub const ALL: [Tile; 2] = [Tile::F2, Tile::F4];

    /// The side of the output tile, `m`.
    pub fn output(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// The side of the input tile, `a = m + 2`.
    pub fn input(self) -> usize {
        self.output() + 2
    }

    /// The transformed positions per tile, `a²`: the number of products.
    pub fn points(self) -> usize {
        self.input() * self.input()
    }

    /// `F(4x4,3x3)`, as dumps show it.
    pub fn label(self) -> &'static str {
        match self {
            Tile::F2 => "F(2x2,3x3)",
            Tile::F4 => "F(4x4,3x3)",
        }
    }
}

/// Which convolution of the layer a Winograd kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The forward pass: the input convolved with the kernel.
    Forward,
    /// The input gradient: the output gradient convolved with the kernel
    /// rotated by 180 degrees, input and output channels swapped.
    BackwardData,
    /// The kernel gradient: the gradient of the transformed kernel, summed
    /// over the tiles of the input and of the output gradient
    /// ([`WinogradBackwardFilter`]), then transformed back into the
    /// layer's kernel gradient ([`WinogradFilterGradient`]).
    BackwardFilter,
}

/// Why a convolution cannot run as a Winograd convolution, or `None` when
/// it can: a 3x3 kernel, stride 1 and dilation 1.
pub fn unsupported(shape: &ConvShape) -> Option<String> {
    if shape.kernel != [3, 3] || shape.stride != [1, 1] || shape.dilation != [1, 1] {
        return Some(format!(
            "Winograd convolutions need a 3x3 kernel, stride 1 and dilation 1, not a {:?} kernel, stride {:?} and dilation {:?}",
            shape.kernel, shape.stride, shape.dilation
        ));
    }
    // The input gradient correlates dY padded by `2 - before` (`Plane`):
    // explicit padding of more than 2 before the image would need dY
    // cropped instead, which the transforms do not do, so such a layer
    // stays on the GEMM, which takes any padding. Any padding after the
    // image is only more zeros (or, with more outputs, more tiles).
    let before = [0, 1].map(|axis| match shape.padding.axis(axis) {
        AxisPadding::Same => 1,
        AxisPadding::Explicit { before, .. } => before,
    });
    if before.iter().any(|&b| b > 2) {
        return Some(format!(
            "Winograd convolutions pad at most 2 before the image, not {before:?}"
        ));
    }
    None
}

/// Target size in f32s of one item's scratch (the transformed input and
/// the products, 1 MiB): with a slice of `U` it stays in a core's L2.
const SCRATCH_TARGET: usize = 256 * 1024;

/// The source channels [`WinogradFilter`] transforms together for the
/// input gradient, whose kernel holds them side by side: one cache line of
/// them.
const ROWS_PER_BLOCK: usize = 16;

/// How many items a domain aims for, so that threads balance.
const TARGET_ITEMS: usize = 4;

/// How many items a domain of few tiles aims for (one whose items would
/// have fewer than [`MIN_TILES`] tiles at [`TARGET_ITEMS`]: a batch-1
/// layer). Each item reads the whole transformed kernel for little work,
/// and those reads are what such a layer costs, so it is split no more
/// than two cores need.
const FEW_TILE_ITEMS: usize = 2;

/// The tiles of one block of the products' AVX-512 registers (64 output
/// channels by 6 tiles, in [`direct::product`] as in the `gemm` crate's
/// micro-kernel): an item whose tile count is not a multiple of it ends
/// each product with a narrow block (32 tiles: five of 6 and one of 2),
/// which runs at about a third of the speed per tile (`perf` of the seed
/// CNN's evaluation, on the crate: 5% of the samples in the 2-tile kernel
/// for 6% of the products).
const GEMM_PANEL: usize = 6;

/// The fewest tiles an item aims for, whatever the scratch: every item
/// reads the whole transformed kernel, and each of its GEMMs has one row
/// per tile, so fewer tiles make both the reads and the GEMM's edges cost
/// more than the cache misses of a larger scratch. A convolution without
/// that many tiles for [`TARGET_ITEMS`] items (a batch-1 layer) makes
/// [`FEW_TILE_ITEMS`] items instead. Measured on the seed CNN at batch 256
/// against 64 and 128 (`docs/performance.md`), when only such items
/// multiplied in registers.
const MIN_TILES: usize = 32;

/// The convolution a Winograd kernel computes, in the terms of its own
/// source (what it reads) and destination (what it writes): a 3x3 stride-1
/// correlation of the source, padded by `pad` at the top and left (and by
/// whatever the destination's size implies at the bottom and right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plane {
    batch: usize,
    source: [usize; 2],
    destination: [usize; 2],
    pad: [usize; 2],
    source_channels: usize,
    destination_channels: usize,
}

impl Plane {
    /// The plane of `direction` of the layer whose geometry is `g`.
    fn new(g: &Geometry, direction: Direction) -> Plane {
        let s = &g.shape;
        let input = [s.height, s.width];
        let output = [g.y.output, g.x.output];
        let before = [g.y.before, g.x.before];
        match direction {
            Direction::Forward | Direction::BackwardFilter => Plane {
                batch: s.batch,
                source: input,
                destination: output,
                pad: before,
                source_channels: s.in_channels,
                destination_channels: s.out_channels,
            },
            // A 3x3 kernel is padded by at most 2 on each side.
            Direction::BackwardData => Plane {
                batch: s.batch,
                source: output,
                destination: input,
                pad: before.map(|p| 2 - p),
                source_channels: s.out_channels,
                destination_channels: s.in_channels,
            },
        }
    }

    /// Tiles down and across one image.
    fn tiles(&self, tile: Tile) -> [usize; 2] {
        self.destination.map(|d| d.div_ceil(tile.output()))
    }

    /// Tiles in the whole batch.
    fn tile_count(&self, tile: Tile) -> usize {
        let [down, across] = self.tiles(tile);
        self.batch * down * across
    }

    fn source_len(&self) -> usize {
        self.batch * self.source[0] * self.source[1] * self.source_channels
    }

    fn destination_len(&self) -> usize {
        self.batch * self.destination[0] * self.destination[1] * self.destination_channels
    }

    /// The image and the tile's row in it of tile row `tile_row`, counted
    /// over the batch.
    fn image_row(&self, tile: Tile, tile_row: usize) -> (usize, usize) {
        let tiles_down = self.tiles(tile)[0];
        (tile_row / tiles_down, tile_row % tiles_down)
    }

    /// Where each position of the input tile in tile row `tile_row` and
    /// column `tx` starts in the source, `None` in the padding.
    fn input_pixels(&self, tile: Tile, tile_row: usize, tx: usize) -> [[Option<usize>; 6]; 6] {
        let m = tile.output();
        let (image, ty) = self.image_row(tile, tile_row);
        let y0 = (ty * m) as i64 - self.pad[0] as i64;
        let x0 = (tx * m) as i64 - self.pad[1] as i64;
        let mut pixels = [[None; 6]; 6];
        for (i, row) in pixels.iter_mut().enumerate() {
            for (j, pixel) in row.iter_mut().enumerate() {
                let (y, x) = (y0 + i as i64, x0 + j as i64);
                let inside = (0..self.source[0] as i64).contains(&y)
                    && (0..self.source[1] as i64).contains(&x);
                *pixel = inside.then(|| {
                    ((image * self.source[0] + y as usize) * self.source[1] + x as usize)
                        * self.source_channels
                });
            }
        }
        pixels
    }

    /// Where each output of the tile in tile row `tile_row` and column
    /// `tx` lies in the destination, counted from destination row (NHWC
    /// position) `first_row`; `None` past the image's edge.
    fn output_pixels(
        &self,
        tile: Tile,
        tile_row: usize,
        tx: usize,
        first_row: usize,
    ) -> [[Option<usize>; 4]; 4] {
        let m = tile.output();
        let (image, ty) = self.image_row(tile, tile_row);
        let mut pixels = [[None; 4]; 4];
        for (i, row) in pixels.iter_mut().enumerate().take(m) {
            for (j, pixel) in row.iter_mut().enumerate().take(m) {
                let (y, x) = (ty * m + i, tx * m + j);
                *pixel = (y < self.destination[0] && x < self.destination[1]).then(|| {
                    let row = (image * self.destination[0] + y) * self.destination[1] + x;
                    (row - first_row) * self.destination_channels
                });
            }
        }
        pixels
    }
}

/// Checks that `direction` is a convolution of the layer (the forward pass
/// or the input gradient), for the kernels that compute one.
fn convolution(name: &str, direction: Direction) -> Result<(), CodegenError> {
    if direction == Direction::BackwardFilter {
        return Err(CodegenError::Malformed {
            kernel: name.to_string(),
            message: "the kernel gradient is not a convolution of the layer: \
                      WinogradBackwardFilter and WinogradFilterGradient compute it"
                .to_string(),
        });
    }
    Ok(())
}

/// Checks `shape`, and the plane of `direction`; `name` names the kernel.
fn plane(name: &str, shape: &ConvShape, direction: Direction) -> Result<Plane, CodegenError> {
    let geometry = Geometry::new(name, shape)?;
    if let Some(message) = unsupported(shape) {
        return Err(CodegenError::Malformed {
            kernel: name.to_string(),
            message,
        });
    }
    Ok(Plane::new(&geometry, direction))
}

/// The transformed kernel's length in f32s, checked: `a²` times the
/// channels of both sides.
fn transformed_len(name: &str, plane: &Plane, tile: Tile) -> Result<usize, CodegenError> {
    tile.points()
        .checked_mul(plane.source_channels)
        .and_then(|n| n.checked_mul(plane.destination_channels))
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| CodegenError::Malformed {
            kernel: name.to_string(),
            message: format!("the transformed kernel of {plane:?} overflows"),
        })
}

/// The kernel transform: `U[ξ][r][c] = (G g G^T)[ξ]`, where `r` is a
/// source channel, `c` a destination channel, and `g` the 3x3 kernel of
/// that pair (the layer's kernel `[3, 3, in, out]`, rotated and transposed
/// for [`Direction::BackwardData`]).
///
/// Domain: the source channels; item `r` writes `U[ξ][r][..]` for every
/// position `ξ`.
#[derive(Debug, Clone)]
pub struct WinogradFilter {
    sizes: TransformSizes,
    direction: Direction,
    /// Whether each position's block is laid out in panels of columns
    /// ([`direct::Right::Panels`]), as the convolution that reads it
    /// multiplies ([`WinogradConv::reads_panels`]).
    panels: bool,
}

/// What both transforms of a layer's kernel ([`WinogradFilter`] and
/// [`WinogradFilterGradient`]) work over: the layer's plane and the tile;
/// their domain is the source channels.
#[derive(Debug, Clone)]
struct TransformSizes {
    name: String,
    plane: Plane,
    tile: Tile,
    transformed_len: usize,
    /// The CPU's widest lanes.
    vectors: Vectors,
}

impl TransformSizes {
    /// The sizes of the kernel of convolution `shape` (`direction`'s plane)
    /// transformed for tile `tile`; `name` names the kernel in errors.
    fn new(
        name: &str,
        shape: &ConvShape,
        tile: Tile,
        direction: Direction,
    ) -> Result<TransformSizes, CodegenError> {
        let plane = plane(name, shape, direction)?;
        let transformed_len = transformed_len(name, &plane, tile)?;
        Ok(TransformSizes {
            name: name.to_string(),
            plane,
            tile,
            transformed_len,
            vectors: Vectors::detect(),
        })
    }

    /// The number of items: the source channels.
    fn domain(&self) -> usize {
        self.plane.source_channels
    }

    /// The length in f32s of the layer's kernel.
    fn kernel_len(&self) -> usize {
        9 * self.plane.source_channels * self.plane.destination_channels
    }

    /// Checks that `items` lie in the domain.
    fn check(&self, items: &Range<usize>) -> Result<(), CodegenError> {
        if items.start > items.end || items.end > self.domain() {
            return Err(CodegenError::Malformed {
                kernel: self.name.clone(),
                message: format!("items {items:?} are not in the domain 0..{}", self.domain()),
            });
        }
        Ok(())
    }
}

impl WinogradFilter {
    /// The transform of the kernel of convolution `shape` for `direction`,
    /// with tile `tile`; `name` names it in errors.
    pub fn new(
        name: &str,
        shape: &ConvShape,
        tile: Tile,
        direction: Direction,
    ) -> Result<WinogradFilter, CodegenError> {
        convolution(name, direction)?;
        let conv = WinogradConv::new(name, shape, tile, direction)?;
        WinogradFilter::for_conv(name, shape, &conv)
    }

    /// The transform of the kernel that `conv`, a convolution of `shape`,
    /// reads, laid out as it reads it (in panels or row-major, as
    /// [`WinogradConv::on_gemm`] may have changed it).
    pub fn for_conv(
        name: &str,
        shape: &ConvShape,
        conv: &WinogradConv,
    ) -> Result<WinogradFilter, CodegenError> {
        Ok(WinogradFilter {
            sizes: TransformSizes::new(name, shape, conv.tile, conv.direction)?,
            direction: conv.direction,
            panels: conv.panels,
        })
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        self.sizes.domain()
    }

    /// The length in f32s of the layer's kernel.
    pub fn kernel_len(&self) -> usize {
        self.sizes.kernel_len()
    }

    /// The length in f32s of the transformed kernel.
    pub fn transformed_len(&self) -> usize {
        self.sizes.transformed_len
    }

    /// Transforms the rows `items` of `kernel` (`kernel_len()` f32s) into
    /// `transformed` (`transformed_len()` f32s).
    ///
    /// # Safety
    /// The buffers hold the f32s given above and do not overlap; calls
    /// running at the same time on the same output must be given disjoint
    /// item ranges.
    pub unsafe fn run(
        &self,
        kernel: *const f32,
        transformed: *mut f32,
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        self.sizes.check(&items)?;
        // SAFETY: the caller's contract: the kernel is only read.
        let kernel = unsafe { std::slice::from_raw_parts(kernel, self.kernel_len()) };
        let channels = self.sizes.plane.destination_channels;
        if self.panels {
            // A panel at a time, a row of it at a time: each position's
            // panel is written in order, a row (four vectors) after the
            // other, as the rows of `U` are below; and a panel's rows of
            // the input gradient's kernel read the same cache lines. A row
            // at a time across every panel wrote each row to as many
            // places as there are panels, for every position: the seed
            // CNN's conv5.winograd took 1.27-1.35 ms so, 0.78-0.84 this
            // way (0.65-0.67 row-major), and its input gradient's
            // transform 1.0-1.1 (1.24-1.29 row-major), two `--profile`
            // rounds each (`docs/performance.md`, twelfth part).
            for panel in (0..channels).step_by(direct::PANEL) {
                let columns = panel..(panel + direct::PANEL).min(channels);
                for r in items.clone() {
                    let mut row = FilterRows {
                        filter: self,
                        kernel,
                        transformed,
                        rows: r..r + 1,
                    };
                    over_channel_range(&mut row, columns.clone(), self.sizes.vectors);
                }
            }
            return Ok(());
        }
        // The input gradient's kernel holds the rows side by side: blocks
        // of rows, each swept a block of channels at a time, so that the
        // cache lines a block of channels reads serve every row of the
        // block. The forward kernel's rows are contiguous, and a row at a
        // time writes each position's row of `U` in order (the seed CNN's
        // conv5.winograd 0.68-0.78 ms -> 0.63-0.68, three alternating
        // --profile rounds).
        let per_block = match self.direction {
            Direction::BackwardData => ROWS_PER_BLOCK,
            Direction::Forward | Direction::BackwardFilter => 1,
        };
        for first_row in items.clone().step_by(per_block) {
            let mut block = FilterRows {
                filter: self,
                kernel,
                transformed,
                rows: first_row..(first_row + per_block).min(items.end),
            };
            over_channels(&mut block, channels, self.sizes.vectors);
        }
        Ok(())
    }

    /// `U[ξ][r][c..c + V::WIDTH]` for every position `ξ`.
    ///
    /// # Safety
    /// The contract of [`Self::run`], with `r` in its items, and `c +
    /// V::WIDTH` at most the destination channels.
    #[inline(always)]
    unsafe fn channels<V: Lanes>(&self, kernel: &[f32], transformed: *mut f32, r: usize, c: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match self.sizes.tile {
                Tile::F2 => self.block::<V, FilterF2, 4>(kernel, transformed, r, c),
                Tile::F4 => self.block::<V, FilterF4, 6>(kernel, transformed, r, c),
            }
        }
    }

    /// [`Self::channels`] with the transform `F` to `K x K` positions.
    ///
    /// # Safety
    /// As for [`Self::channels`].
    #[inline(always)]
    unsafe fn block<V: Lanes, F: Transform<3, K>, const K: usize>(
        &self,
        kernel: &[f32],
        transformed: *mut f32,
        r: usize,
        c: usize,
    ) {
        let (rows, cols) = (
            self.sizes.plane.source_channels,
            self.sizes.plane.destination_channels,
        );
        let mut g = [[V::zero(); 3]; 3];
        for (ky, row) in g.iter_mut().enumerate() {
            for (kx, lanes) in row.iter_mut().enumerate() {
                *lanes = match self.direction {
                    // The layer's kernel is [ky][kx][r][c] (`new` takes
                    // no BackwardFilter).
                    Direction::Forward | Direction::BackwardFilter => {
                        V::load(&kernel[((ky * 3 + kx) * rows + r) * cols + c..])
                    }
                    // The layer's kernel is [2 - ky][2 - kx][c][r]: its input
                    // channel is this transform's destination.
                    Direction::BackwardData => {
                        let tap = (2 - ky) * 3 + (2 - kx);
                        let mut values = [0.0; 16];
                        for (lane, value) in values[..V::WIDTH].iter_mut().enumerate() {
                            *value = kernel[(tap * cols + c + lane) * rows + r];
                        }
                        V::load(&values)
                    }
                };
            }
        }
        let columns = transform_2d::<V, F, 3, K>(g);
        // Where row `r`, channel `c` of a position's block lies in it: its
        // panel of columns holds `rows` rows of the panel's width.
        let in_block = if self.panels {
            let panel = c / direct::PANEL * direct::PANEL;
            panel * rows + r * (cols - panel).min(direct::PANEL) + (c - panel)
        } else {
            r * cols + c
        };
        for i in 0..K {
            for (j, column) in columns.iter().enumerate() {
                let at = (i * K + j) * rows * cols + in_block;
                // SAFETY: row `r` of every position belongs to this item
                // alone, and `at + V::WIDTH <= transformed_len` (a vector
                // of channels never crosses a panel: they are whole
                // vectors of the widest lanes).
                let out = unsafe { std::slice::from_raw_parts_mut(transformed.add(at), V::WIDTH) };
                column[i].store(out);
            }
        }
    }
}

/// A block of source channels of [`WinogradFilter::run`], swept a block of
/// destination channels at a time. Made only by `run`, whose contract
/// gives its rows of the transformed kernel to it alone.
struct FilterRows<'a> {
    filter: &'a WinogradFilter,
    kernel: &'a [f32],
    transformed: *mut f32,
    rows: Range<usize>,
}

impl ChannelBlock for FilterRows<'_> {
    #[inline(always)]
    fn run<V: Lanes>(&mut self, c: usize) {
        for r in self.rows.clone() {
            // SAFETY: `run`'s contract, under which this block was made.
            unsafe {
                self.filter
                    .channels::<V>(self.kernel, self.transformed, r, c)
            };
        }
    }
}

/// The buffers of a [`WinogradConv`]: its source, the transformed kernel
/// ([`WinogradFilter`]), the bias (forward only) and the destination; in
/// the terms of [`ForwardBuffers`] with `kernel` the transformed kernel.
pub type WinogradBuffers = ForwardBuffers;

/// A Winograd convolution: the forward pass or the input gradient of a 3x3
/// stride-1 convolution, from its transformed kernel, then the epilogue.
///
/// Domain: bands of tile rows counted over the batch. A tile row is `m`
/// rows of one image's destination, so a band's output rows are one
/// contiguous run of NHWC rows, on which the epilogue runs while they are
/// in cache. An item transforms its tiles of the source into the scratch,
/// makes one GEMM per transformed position, and transforms the products
/// back into the destination.
#[derive(Debug, Clone)]
pub struct WinogradConv {
    name: String,
    plane: Plane,
    tile: Tile,
    direction: Direction,
    bias: bool,
    transformed_len: usize,
    tile_rows_per_item: usize,
    /// Whether the products run on [`direct::product`]'s registers, not
    /// the `gemm` crate: wherever the CPU has AVX-512. The crate packs the
    /// block of the transformed kernel it multiplies again for every item
    /// and position, which the transform can do once for all of them (in
    /// panels, [`Self::reads_panels`]): at batch 1 the packing cost more
    /// than the product (the seed CNN's conv3 took 0.136 ms that way,
    /// 0.09 ms direct), and at batch 32 `perf` found 15% of the seed CNN's
    /// training step in it (the step 43.8 -> 42.2 ms, medians of five
    /// alternating `cnnc bench` rounds, `docs/performance.md`, twelfth
    /// part).
    direct: bool,
    /// Items of this many destination channels, every tile each, rather
    /// than items of tile rows: a forward pass of few rows and many
    /// channels (a batch-1 layer of a small image,
    /// [`forward_splits_columns`], which the fusion pass gives no
    /// epilogue) whose tiles all fit one direct item. Split over tile
    /// rows, each item read the whole transformed kernel for half the
    /// tiles, and those reads are what such a layer costs; split over
    /// channels, each reads its share of it once, and every value it
    /// loads feeds every tile. Each item transforms the whole source.
    columns: Option<usize>,
    /// Whether the direct products read the transformed kernel in panels
    /// of columns ([`direct::Right::Panels`]), which [`WinogradFilter`]
    /// writes then: where they run direct, and items of channels start at
    /// a whole panel.
    panels: bool,
    /// The CPU's widest lanes, for the transforms.
    vectors: Vectors,
}

impl WinogradConv {
    /// The Winograd kernel of `direction` of convolution `shape`, with
    /// tile `tile`; `name` names it in errors. The input gradient has no
    /// bias, whatever the layer's.
    pub fn new(
        name: &str,
        shape: &ConvShape,
        tile: Tile,
        direction: Direction,
    ) -> Result<WinogradConv, CodegenError> {
        convolution(name, direction)?;
        let plane = plane(name, shape, direction)?;
        let transformed_len = transformed_len(name, &plane, tile)?;
        let tiles = plane.tiles(tile);
        let per_tile_row =
            tiles[1] * tile.points() * (plane.source_channels + plane.destination_channels);
        let tile_rows = plane.batch * tiles[0];
        let cached = (SCRATCH_TARGET / per_tile_row.max(1)).max(MIN_TILES.div_ceil(tiles[1]));
        let balanced = |items: usize| tile_rows.div_ceil(items).max(1);
        let mut tile_rows_per_item = cached.min(balanced(TARGET_ITEMS));
        if tile_rows_per_item * tiles[1] < MIN_TILES {
            tile_rows_per_item = cached.min(balanced(FEW_TILE_ITEMS));
        }
        // Whole panels of the GEMM's micro-kernel where there are items
        // enough that a few more tiles each do not unbalance the threads.
        let whole = (tile_rows_per_item..tile_rows_per_item + GEMM_PANEL)
            .find(|rows| rows * tiles[1] % GEMM_PANEL == 0)
            .unwrap_or(tile_rows_per_item);
        if tile_rows.div_ceil(whole) >= 2 * TARGET_ITEMS {
            tile_rows_per_item = whole;
        }
        let cout = plane.destination_channels;
        let rows = plane.batch * plane.destination[0] * plane.destination[1];
        let columns = (direction == Direction::Forward
            && forward_splits_columns(rows, cout)
            && tile_rows * tiles[1] < MIN_TILES)
            .then(|| (cout / FEW_TILE_ITEMS).next_multiple_of(16));
        if columns.is_some() {
            tile_rows_per_item = tile_rows.max(1);
        }
        let direct = direct::available();
        Ok(WinogradConv {
            name: name.to_string(),
            plane,
            tile,
            direction,
            bias: shape.bias && direction == Direction::Forward,
            transformed_len,
            tile_rows_per_item,
            direct,
            columns,
            panels: direct && columns.is_none_or(|c| c.is_multiple_of(direct::PANEL)),
            vectors: Vectors::detect(),
        })
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        if let Some(columns) = self.columns {
            return self.plane.destination_channels.div_ceil(columns);
        }
        let tile_rows = self.plane.batch * self.plane.tiles(self.tile)[0];
        tile_rows.div_ceil(self.tile_rows_per_item)
    }

    /// How many times the items read the whole transformed kernel between
    /// them: once per item, or once in all for items of channels.
    pub fn kernel_reads(&self) -> usize {
        if self.columns.is_some() {
            1
        } else {
            self.domain()
        }
    }

    /// The items that write the destination rows of images `examples` of
    /// a batch of `batch` ([`crate::codegen::program::Kernel::example_items`]);
    /// `None` for items of channels, which each write every image.
    pub fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        if batch != self.plane.batch || examples.end > batch || self.columns.is_some() {
            return None;
        }
        let per_example = self.plane.tiles(self.tile)[0];
        Some(super::items_of(
            examples,
            per_example,
            self.tile_rows_per_item,
        ))
    }

    /// How the kernel computes, for profiles, where its products run
    /// direct ([`Self::runs_direct`]); otherwise the plan's word holds.
    pub fn method(&self) -> Option<&'static str> {
        if !self.direct {
            return None;
        }
        Some(match (self.direction, self.tile, self.columns.is_some()) {
            (Direction::BackwardData, Tile::F2, _) => "backward-data, winograd F(2x2,3x3), direct",
            (Direction::BackwardData, Tile::F4, _) => "backward-data, winograd F(4x4,3x3), direct",
            (_, Tile::F2, false) => "forward, winograd F(2x2,3x3), direct",
            (_, Tile::F4, false) => "forward, winograd F(4x4,3x3), direct",
            (_, Tile::F2, true) => "forward, winograd F(2x2,3x3), direct by channels",
            (_, Tile::F4, true) => "forward, winograd F(4x4,3x3), direct by channels",
        })
    }

    /// Whether the products run in registers ([`direct::product`]) rather
    /// than through the `gemm` crate: on a CPU with AVX-512, unless
    /// [`Self::on_gemm`] says otherwise.
    pub fn runs_direct(&self) -> bool {
        self.direct
    }

    /// The same convolution with its products through the `gemm` crate,
    /// as on a CPU without AVX-512, and the transformed kernel row-major
    /// ([`WinogradFilter::for_conv`] writes it so): for tests, which check
    /// that path on any CPU.
    pub fn on_gemm(self) -> WinogradConv {
        WinogradConv {
            direct: false,
            panels: false,
            ..self
        }
    }

    /// Whether the items are small (fewer than [`MIN_TILES`] tiles), for
    /// the cost model (`passes::algorithm`), which counts their reads of
    /// the transformed kernel as overlapping their products, as products
    /// in registers overlap them, and larger items' as added to them, as
    /// the `gemm` crate's packing adds them. The same on every CPU, and
    /// left so when every size came to run in registers on AVX-512.
    pub fn has_small_items(&self) -> bool {
        self.max_tiles() < MIN_TILES
    }

    /// Whether the kernel adds a bias (and so takes a bias buffer).
    pub fn has_bias(&self) -> bool {
        self.bias
    }

    /// Whether it reads the transformed kernel in panels of columns
    /// ([`direct::Right::Panels`]): its products run direct, and each item
    /// starts at a whole panel. [`WinogradFilter`] writes what it reads;
    /// the transformed kernel's length is the same either way.
    pub fn reads_panels(&self) -> bool {
        self.panels
    }

    /// The lengths in f32s of the source, the transformed kernel and the
    /// destination.
    pub fn lengths(&self) -> (usize, usize, usize) {
        (
            self.plane.source_len(),
            self.transformed_len,
            self.plane.destination_len(),
        )
    }

    /// The f32s of scratch one thread needs to run any range of items.
    pub fn scratch_len(&self) -> usize {
        let (v, m) = self.scratch_parts(self.max_tiles());
        scratch_for(v + m)
    }

    /// Runs items `items`.
    ///
    /// # Safety
    /// Each buffer must hold the f32s [`Self::lengths`] gives (the bias
    /// the destination's channels); the destination must not overlap the
    /// other buffers. Calls running at the same time on the same
    /// destination must be given disjoint item ranges. The contract of the
    /// epilogue ([`Epilogue::new`]) must hold, with its channels the
    /// destination's.
    pub unsafe fn run(
        &self,
        buffers: &WinogradBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        let call = Call {
            name: &self.name,
            domain: self.domain(),
            bias: Some((self.bias, buffers.bias.is_some())),
            scratch_len: self.scratch_len(),
        };
        let scratch = call.check(&items, scratch)?;
        if epilogue.is_some() && self.columns.is_some() {
            return Err(CodegenError::Malformed {
                kernel: self.name.clone(),
                message: "its items are blocks of output channels, which take no epilogue".into(),
            });
        }
        for item in items {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.item(buffers, epilogue, scratch, item) };
        }
        Ok(())
    }

    /// The most tiles an item holds.
    fn max_tiles(&self) -> usize {
        self.tile_rows_per_item * self.plane.tiles(self.tile)[1]
    }

    /// The f32s of the transformed source and of the products for `tiles`
    /// tiles, each rounded up to whole 64-byte lines.
    fn scratch_parts(&self, tiles: usize) -> (usize, usize) {
        let points = self.tile.points();
        let v = (points * tiles * self.plane.source_channels).next_multiple_of(ALIGN_FLOATS);
        let m = (points * tiles * self.plane.destination_channels).next_multiple_of(ALIGN_FLOATS);
        (v, m)
    }

    /// The tile rows of item `item`, counted over the batch.
    fn tile_rows(&self, item: usize) -> Range<usize> {
        let total = self.plane.batch * self.plane.tiles(self.tile)[0];
        if self.columns.is_some() {
            return 0..total;
        }
        (item * self.tile_rows_per_item).min(total)
            ..((item + 1) * self.tile_rows_per_item).min(total)
    }

    /// The destination channels of item `item`.
    fn channels(&self, item: usize) -> Range<usize> {
        let cout = self.plane.destination_channels;
        match self.columns {
            Some(columns) => (item * columns).min(cout)..((item + 1) * columns).min(cout),
            None => 0..cout,
        }
    }

    /// The destination rows (NHWC positions) of tile row `tile_row`.
    fn destination_rows(&self, tile_row: usize) -> Range<usize> {
        let p = &self.plane;
        let m = self.tile.output();
        let (image, ty) = p.image_row(self.tile, tile_row);
        let first = image * p.destination[0] + ty * m;
        let last = image * p.destination[0] + (ty * m + m).min(p.destination[0]);
        first * p.destination[1]..last * p.destination[1]
    }

    /// One item: transform its tiles, multiply, transform back, epilogue.
    ///
    /// # Safety
    /// The contract of [`Self::run`]; `scratch` holds `scratch_len() -
    /// ALIGN_FLOATS` f32s.
    unsafe fn item(
        &self,
        buffers: &WinogradBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        item: usize,
    ) {
        let p = &self.plane;
        let tile_rows = self.tile_rows(item);
        let tiles = tile_rows.len() * p.tiles(self.tile)[1];
        let (v_len, _) = self.scratch_parts(tiles);
        let (v, m) = scratch.split_at_mut(v_len);
        // SAFETY: the source holds `source_len` f32s and is only read.
        let source = unsafe { std::slice::from_raw_parts(buffers.input, p.source_len()) };
        self.transform_input(source, tile_rows.clone(), v);
        let (cin, cout) = (p.source_channels, p.destination_channels);
        let channels = self.channels(item);
        for point in 0..self.tile.points() {
            let lhs = v[point * tiles * cin..].as_ptr();
            let rhs = buffers.kernel.wrapping_add(point * cin * cout);
            let dst = m[point * tiles * cout..].as_mut_ptr();
            if self.direct {
                let right = if self.panels {
                    direct::Right::Panels {
                        first: rhs,
                        depth: cin,
                        columns: cout,
                    }
                } else {
                    direct::Right::Rows(rhs)
                };
                let starts = [(lhs, 0)];
                let lines = direct::Lines {
                    starts: &starts,
                    run: cin,
                    row_stride: cin,
                };
                // SAFETY: `direct` is set only where the product is
                // available; `lhs` holds `tiles` rows of `cin` f32s, `rhs`
                // `cin` rows of `cout` (in panels where `panels` is set,
                // and then `channels` starts at a whole panel), and `dst`,
                // this item's scratch, `tiles` rows of `cout`, of which
                // the item writes `channels`.
                unsafe {
                    direct::product(
                        tiles,
                        channels.clone(),
                        dst,
                        cout,
                        lines,
                        right,
                        Start::Zero,
                    )
                };
                continue;
            }
            // SAFETY: the operands address this position's block of the
            // transformed source and of the transformed kernel; the
            // products' block is this item's scratch.
            unsafe {
                matmul(
                    (tiles, channels.len(), cin),
                    dst.add(channels.start),
                    cout,
                    Operand::rows(lhs, cin),
                    Operand::rows(rhs.wrapping_add(channels.start), cout),
                    false,
                )
            };
        }
        let rows = self.destination_rows(tile_rows.start).start
            ..self.destination_rows(tile_rows.end - 1).end;
        // SAFETY: these destination rows belong to this item alone; the
        // bias holds `cout` f32s.
        let (destination, bias) = unsafe {
            (
                std::slice::from_raw_parts_mut(
                    buffers.output.add(rows.start * cout),
                    rows.len() * cout,
                ),
                buffers.bias.map(|b| std::slice::from_raw_parts(b, cout)),
            )
        };
        self.transform_output(m, tile_rows, tiles, bias, channels, destination);
        if let Some(epilogue) = epilogue {
            // SAFETY: the destination holds `rows.end * cout` f32s; the rest
            // is the caller's contract.
            unsafe { epilogue.apply(buffers.output, rows, cout) };
        }
    }

    /// `V[ξ][t][c]` for the tiles of `tile_rows`, in order (`t` counts
    /// them from 0).
    fn transform_input(&self, source: &[f32], tile_rows: Range<usize>, v: &mut [f32]) {
        let p = &self.plane;
        let tiles_across = p.tiles(self.tile)[1];
        let cin = p.source_channels;
        let tiles = tile_rows.len() * tiles_across;
        for (t, (tile_row, tx)) in tile_rows
            .flat_map(|r| (0..tiles_across).map(move |tx| (r, tx)))
            .enumerate()
        {
            let pixels = p.input_pixels(self.tile, tile_row, tx);
            let mut block = InputTile {
                conv: self,
                source,
                pixels: &pixels,
                t,
                tiles,
                v: &mut *v,
            };
            over_channels(&mut block, cin, self.vectors);
        }
    }

    /// `Y = Aᵀ M A` (plus the bias) for the tiles of `tile_rows`, into
    /// `channels` of the destination rows of those tile rows
    /// (`destination` starts at the first of them); the tile's outputs
    /// past the image's edge are dropped.
    fn transform_output(
        &self,
        products: &[f32],
        tile_rows: Range<usize>,
        tiles: usize,
        bias: Option<&[f32]>,
        channels: Range<usize>,
        destination: &mut [f32],
    ) {
        let p = &self.plane;
        let tiles_across = p.tiles(self.tile)[1];
        let first_row = self.destination_rows(tile_rows.start).start;
        for (t, (tile_row, tx)) in tile_rows
            .flat_map(|r| (0..tiles_across).map(move |tx| (r, tx)))
            .enumerate()
        {
            let pixels = p.output_pixels(self.tile, tile_row, tx, first_row);
            let mut block = OutputTile {
                conv: self,
                products,
                pixels: &pixels,
                t,
                tiles,
                bias,
                destination: &mut *destination,
            };
            over_channel_range(&mut block, channels.clone(), self.vectors);
        }
    }
}

/// One tile of the source as [`WinogradConv::transform_input`] reads it,
/// transformed into `V[ξ][t][c]`.
struct InputTile<'a> {
    conv: &'a WinogradConv,
    source: &'a [f32],
    /// Where each position of the (at most 6x6) input tile starts in the
    /// source, `None` in the padding.
    pixels: &'a [[Option<usize>; 6]; 6],
    /// The tile's number in its item.
    t: usize,
    /// The item's tiles.
    tiles: usize,
    /// The item's transformed source.
    v: &'a mut [f32],
}

impl ChannelBlock for InputTile<'_> {
    #[inline(always)]
    fn run<V: Lanes>(&mut self, c: usize) {
        match self.conv.tile {
            Tile::F2 => self.block::<V, InputF2, 4>(c),
            Tile::F4 => self.block::<V, InputF4, 6>(c),
        }
    }
}

impl InputTile<'_> {
    /// `V[ξ][t][c..c + V::WIDTH]` with the transform `F` of `A x A` tiles.
    #[inline(always)]
    fn block<V: Lanes, F: Transform<A, A>, const A: usize>(&mut self, c: usize) {
        let cin = self.conv.plane.source_channels;
        let d = load_tile::<V, A, 6>(self.source, self.pixels, c);
        let columns = transform_2d::<V, F, A, A>(d);
        for i in 0..A {
            for (j, column) in columns.iter().enumerate() {
                column[i].store(&mut self.v[((i * A + j) * self.tiles + self.t) * cin + c..]);
            }
        }
    }
}

/// One tile of the destination as [`WinogradConv::transform_output`]
/// writes it, from the products `M[ξ][t][c]`.
struct OutputTile<'a> {
    conv: &'a WinogradConv,
    products: &'a [f32],
    /// Where each output of the (at most 4x4) tile goes, `None` past the
    /// image's edge.
    pixels: &'a [[Option<usize>; 4]; 4],
    /// The tile's number in its item.
    t: usize,
    /// The item's tiles.
    tiles: usize,
    /// The bias, if the kernel adds one.
    bias: Option<&'a [f32]>,
    /// The item's destination rows.
    destination: &'a mut [f32],
}

impl ChannelBlock for OutputTile<'_> {
    #[inline(always)]
    fn run<V: Lanes>(&mut self, c: usize) {
        match self.conv.tile {
            Tile::F2 => self.block::<V, OutputF2, 4, 2>(c),
            Tile::F4 => self.block::<V, OutputF4, 6, 4>(c),
        }
    }
}

impl OutputTile<'_> {
    /// The tile's outputs in channels `c..c + V::WIDTH` with the transform
    /// `F` from `A x A` products to `M x M` outputs.
    #[inline(always)]
    fn block<V: Lanes, F: Transform<A, M>, const A: usize, const M: usize>(&mut self, c: usize) {
        let cout = self.conv.plane.destination_channels;
        let bias = self.bias.map_or(V::zero(), |b| V::load(&b[c..]));
        // Position `(i, j)` of the tile is at `M[i * A + j][t][c]`.
        let m = load_grid::<V, A>(self.products, self.t * cout + c, self.tiles * cout);
        let columns = transform_2d::<V, F, A, M>(m);
        for (i, pixels) in self.pixels.iter().enumerate().take(M) {
            for (column, pixel) in columns.iter().zip(pixels) {
                if let Some(at) = pixel {
                    column[i].add(bias).store(&mut self.destination[at + c..]);
                }
            }
        }
    }
}
