//! Contraction kernels: convolution and dense layers, forward and backward,
//! as im2col + GEMM + an element-wise epilogue.
//!
//! The GEMM is the `gemm` crate with its `x86-v4` feature, called on one
//! thread per item; the measurements behind that choice, and the speed of
//! each kernel, are in `docs/backend.md` ("Contraction kernels:
//! measurements and the GEMM decision").
//!
//! # Kernels and their domains
//!
//! Every kernel is work over a *domain* of `domain()` independent items; the
//! executor splits `0..domain()` into ranges, one per thread, and calls
//! `run` on each. An item's computation does not depend on the range it is
//! run in (each item makes its own single-threaded GEMM calls, of sizes fixed
//! when the kernel is built), so any split gives bitwise the same result as
//! running the whole domain at once, on any number of threads.
//!
//! | kernel | item | reduction order |
//! |---|---|---|
//! | [`ConvForward`] | a block of output rows: im2col, GEMM, epilogue; with few taps and input channels on AVX-512, the direct product instead of im2col ([`direct`]); for tiny images, a block of images by position ([`positions`]); for a few rows, a block of output channels | over taps and channels, inside the GEMM (the direct product: in order, with fused multiply-adds; by position: taps in order, channels inside each GEMM) |
//! | [`ConvBackwardData`] | a block of input-gradient rows (1x1 stride 1 and dense), a band of input rows counted over the batch (whole images when they fit): GEMM into the im2col gradient, then col2im; or for tiny images a block of images by position | taps in a fixed order per pixel |
//! | [`ConvBackwardFilter`] | a block of weight-gradient rows, reduced over all output rows in fixed blocks; the last item is the bias gradient | blocks of output rows in order |
//!
//! Dense layers are 1x1 convolutions over rows ([`DenseShape`]); their
//! kernels are built with the `dense` constructors.
//!
//! Scratch memory (the im2col block of an item) is the caller's: each
//! thread passes a buffer of `scratch_len()` f32s, so that the memory
//! planner can place it. Buffers are passed as raw pointers, as the
//! executor holds them (places in one arena); their lengths are the
//! kernel's [`Lengths`].

pub mod bf16;
mod direct;
mod geometry;
mod matmul;
mod positions;
pub mod step;
pub mod winograd;

use std::ops::Range;

use self::geometry::{add_assign, Geometry};
use self::matmul::{matmul, matmul_small_rows, Operand, FEW_ROWS, SMALL_ROWS};
use self::positions::{Positions, Side};
use super::axis::Axis;
use super::elementwise::LiveTaps;
use super::{CodegenError, CompiledKernel, Storage};
use crate::graph::Padding;

/// Target size in f32s of one item's scratch block (512 KiB): with a panel
/// of weights it stays in a core's L2 cache (1 MiB on the measured machine).
const SCRATCH_TARGET: usize = 128 * 1024;
/// Target size in f32s of a backward-data item's im2col gradient (1 MiB):
/// larger than [`SCRATCH_TARGET`] so that bands hold whole images (a band
/// that cuts an image computes the rows on both sides of the cut twice).
const DATA_SCRATCH_TARGET: usize = 256 * 1024;
/// Bounds on the rows of one item's product (fewer rows run at a fraction
/// of the GEMM's speed; more leave the domain too few items).
const MIN_ROWS_PER_ITEM: usize = 16;
const MAX_ROWS_PER_ITEM: usize = 512;
/// Bounds on the weight-gradient rows of one backward-filter item.
const MIN_COLS_PER_ITEM: usize = 16;
const MAX_COLS_PER_ITEM: usize = 256;
/// How many items a domain aims for, so that threads balance.
const TARGET_ITEMS: usize = 8;
/// Forward products of at most this many rows (a small image at batch 1)
/// are split over their output channels rather than their rows: split
/// over rows, every item read (and the GEMM packed) all of the weights.
/// Products of a few rows are one item otherwise, on one thread; split,
/// each item streams its block of the weights through AVX-512's registers
/// (`matmul::few_rows`), and two threads read them twice as fast as one
/// (ResNet-34's batch-1 2x2 layers, `docs/performance.md`). Where the CPU
/// has no AVX-512, the few-row product runs slower on blocks of columns
/// than on all of them, and such a product stays one item (without an
/// epilogue all the same, so that plans do not depend on the CPU).
const COLUMN_SPLIT_ROWS: usize = 64;
/// The fewest output channels of one item of a product split over its
/// channels; wider layers are split in four (each item builds the whole
/// im2col block).
const COLUMNS_PER_ITEM: usize = 64;
/// Rows summed in f32 before a partial sum joins the bias gradient.
const BIAS_BLOCK_ROWS: usize = 256;
/// Scratch buffers are used from their first 64-byte boundary on.
const ALIGN_FLOATS: usize = 16;

/// A 2-D convolution's sizes: NHWC input `[batch, height, width,
/// in_channels]`, kernel `[kh, kw, in_channels, out_channels]`, optional
/// bias `[out_channels]`, NHWC output. Padding follows TensorFlow
/// ([`crate::ops::same_padding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Images in the batch.
    pub batch: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Vertical and horizontal dilation.
    pub dilation: [usize; 2],
    /// `same` or `valid`.
    pub padding: Padding,
    /// Whether the layer adds a bias.
    pub bias: bool,
}

impl ConvShape {
    fn input(&self) -> [usize; 2] {
        [self.height, self.width]
    }

    /// The window's slide along height (`axis` 0) or width (1), with that
    /// axis's padding; `None` where the kernel does not fit.
    pub(crate) fn axis(&self, axis: usize) -> Option<Axis> {
        Axis::new(
            self.input()[axis],
            self.kernel[axis],
            self.stride[axis],
            self.dilation[axis],
            self.padding.axis(axis),
        )
    }
}

/// A dense layer's sizes: input `[rows, inputs]`, kernel `[inputs, units]`,
/// optional bias `[units]`, output `[rows, units]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseShape {
    /// Rows (the batch, times any leading axes).
    pub rows: usize,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub units: usize,
    /// Whether the layer adds a bias.
    pub bias: bool,
}

impl DenseShape {
    /// The same computation as a 1x1 convolution on `rows` 1x1 images.
    fn as_conv(&self) -> ConvShape {
        ConvShape {
            batch: self.rows,
            height: 1,
            width: 1,
            in_channels: self.inputs,
            out_channels: self.units,
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Valid,
            bias: self.bias,
        }
    }
}

/// A compiled element-wise kernel run on each finished block of a
/// contraction's output rows while they are in cache: its input 0 and its
/// output 0 are the contraction's output (updated in place), followed by
/// the extra buffers given here. Tensor buffers are indexed by the same
/// rows as the output.
pub struct Epilogue<'a> {
    kernel: &'a CompiledKernel,
    inputs: Vec<*mut f32>,
    outputs: Vec<*mut f32>,
}

// SAFETY: the pointers are addresses the JIT kernel reads (inputs) or
// writes (outputs) only on the rows of the item being run, which the
// contract of `Epilogue::new` and of the kernels' `run` keeps disjoint
// between threads.
unsafe impl Send for Epilogue<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for Epilogue<'_> {}

impl<'a> Epilogue<'a> {
    /// An epilogue running `kernel` with extra inputs `inputs` and extra
    /// outputs `outputs`.
    ///
    /// # Safety
    /// `kernel` must have been compiled from an
    /// [`Elementwise`](super::elementwise::Elementwise) with exactly
    /// `1 + inputs.len()` inputs and `1 + outputs.len()` outputs, whose
    /// buffers 0 are the contraction's output (`channels` = its channels).
    /// Each extra buffer must be valid, while the epilogue is used, for the
    /// contraction's output rows (a tensor) or for one row (per-channel),
    /// and no other code may access the rows of an extra output that a
    /// running item writes.
    pub unsafe fn new(
        kernel: &'a CompiledKernel,
        inputs: &[*const f32],
        outputs: &[*mut f32],
    ) -> Epilogue<'a> {
        Epilogue {
            kernel,
            inputs: inputs.iter().map(|&p| p.cast_mut()).collect(),
            outputs: outputs.to_vec(),
        }
    }

    /// Runs the kernel on rows `rows` of `block`, the contraction's output
    /// (or a window kernel's, [`crate::codegen::program::RowEpilogue`]).
    ///
    /// # Safety
    /// `block` holds at least `rows.end * channels` f32s, and the contract
    /// of [`Epilogue::new`] holds.
    pub(crate) unsafe fn apply(&self, block: *mut f32, rows: Range<usize>, channels: usize) {
        // SAFETY: the caller's contract: the block is the kernel's input 0
        // and output 0, valid for these rows.
        unsafe { self.run(block, block, rows, channels) }
    }

    /// Runs the kernel on rows `rows` of a contraction's output held in f32
    /// in `block` (its first row `rows.start`), storing them into `output`
    /// as the kernel's output 0 is stored (bf16, for
    /// [`crate::codegen::contraction::bf16::Bf16Forward::writing`]).
    ///
    /// # Safety
    /// `block` holds `rows.len() * channels` f32s, `output` the stored
    /// values of at least `rows.end * channels`, not overlapping `block`;
    /// the contract of [`Epilogue::new`] holds.
    pub(crate) unsafe fn apply_from(
        &self,
        block: *mut f32,
        output: *mut f32,
        rows: Range<usize>,
        channels: usize,
    ) {
        // The kernel addresses row `r` of a tensor at its base plus `r`
        // rows: the block's base lies `rows.start` rows before it (an
        // address it never reads).
        let base = block.wrapping_sub(rows.start * channels);
        // SAFETY: the block's rows at `base` plus `rows`, the output's as
        // stored (the caller's contract).
        unsafe { self.run(base, output, rows, channels) }
    }

    /// Runs the kernel on rows `rows` with input 0 at `input` and output 0
    /// at `output`, then the extra buffers.
    ///
    /// # Safety
    /// Both are valid for these rows as the kernel addresses them, and the
    /// contract of [`Epilogue::new`] holds.
    unsafe fn run(&self, input: *mut f32, output: *mut f32, rows: Range<usize>, channels: usize) {
        let mut args = Vec::with_capacity(2 + self.inputs.len() + self.outputs.len());
        args.push(input);
        args.extend(&self.inputs);
        args.push(output);
        args.extend(&self.outputs);
        // SAFETY: one pointer per buffer the kernel was compiled for (the
        // contract of `new`), each valid for these rows.
        unsafe { self.kernel.run(&args, rows, channels) }
    }
}

/// The buffers of a forward kernel ([`ConvForward`]).
#[derive(Debug, Clone, Copy)]
pub struct ForwardBuffers {
    /// The input, `lengths().input` f32s.
    pub input: *const f32,
    /// The kernel, `lengths().kernel` f32s.
    pub kernel: *const f32,
    /// The bias, `out_channels` f32s; present exactly when the shape has one.
    pub bias: Option<*const f32>,
    /// The output, `lengths().output` f32s.
    pub output: *mut f32,
}

/// The buffers of a backward-data kernel ([`ConvBackwardData`]).
#[derive(Debug, Clone, Copy)]
pub struct BackwardDataBuffers {
    /// The gradient of the output, `lengths().output` f32s.
    pub output_grad: *const f32,
    /// The kernel, `lengths().kernel` f32s.
    pub kernel: *const f32,
    /// The gradient of the input, `lengths().input` f32s (overwritten).
    pub input_grad: *mut f32,
}

/// The buffers of a backward-filter kernel ([`ConvBackwardFilter`]).
#[derive(Debug, Clone, Copy)]
pub struct BackwardFilterBuffers {
    /// The forward input, `lengths().input` f32s.
    pub input: *const f32,
    /// The gradient of the output, `lengths().output` f32s.
    pub output_grad: *const f32,
    /// The gradient of the kernel, `lengths().kernel` f32s (overwritten).
    pub kernel_grad: *mut f32,
    /// The gradient of the bias, `out_channels` f32s (overwritten); present
    /// exactly when the shape has a bias.
    pub bias_grad: Option<*mut f32>,
}

// SAFETY: the buffer structs only carry addresses; every access goes
// through a kernel's `run`, whose contract keeps concurrent calls on
// disjoint items, and items write disjoint parts of the outputs.
unsafe impl Send for ForwardBuffers {}
// SAFETY: as above.
unsafe impl Sync for ForwardBuffers {}
// SAFETY: as above.
unsafe impl Send for BackwardDataBuffers {}
// SAFETY: as above.
unsafe impl Sync for BackwardDataBuffers {}
// SAFETY: as above.
unsafe impl Send for BackwardFilterBuffers {}
// SAFETY: as above.
unsafe impl Sync for BackwardFilterBuffers {}

/// What the kernels have in common: a name, a geometry and a domain.
#[derive(Debug, Clone)]
struct Common {
    name: String,
    geometry: Geometry,
}

impl Common {
    fn new(name: &str, shape: &ConvShape) -> Result<Common, CodegenError> {
        Ok(Common {
            name: name.to_string(),
            geometry: Geometry::new(name, shape)?,
        })
    }

    /// Checks a call's items, bias buffer (`None` for a kernel that takes
    /// none) and scratch; returns the scratch from its first 64-byte
    /// boundary on.
    fn check<'s>(
        &self,
        items: &Range<usize>,
        domain: usize,
        bias_given: Option<bool>,
        scratch: &'s mut [f32],
        scratch_len: usize,
    ) -> Result<&'s mut [f32], CodegenError> {
        let call = Call {
            name: &self.name,
            domain,
            bias: bias_given.map(|given| (self.geometry.shape.bias, given)),
            scratch_len,
        };
        call.check(items, scratch)
    }
}

/// What a kernel's `run` checks of a call, and against what.
struct Call<'a> {
    /// The kernel's name, for the error.
    name: &'a str,
    /// The kernel's domain.
    domain: usize,
    /// Whether the kernel takes a bias buffer and whether the call passes
    /// one; `None` for a kernel that never takes one.
    bias: Option<(bool, bool)>,
    /// The scratch the kernel needs, with room to align it.
    scratch_len: usize,
}

impl Call<'_> {
    /// Checks the call's items, bias buffer and scratch; returns the
    /// scratch from its first 64-byte boundary on.
    fn check<'s>(
        &self,
        items: &Range<usize>,
        scratch: &'s mut [f32],
    ) -> Result<&'s mut [f32], CodegenError> {
        let malformed = |message: String| CodegenError::Malformed {
            kernel: self.name.to_string(),
            message,
        };
        let (domain, scratch_len) = (self.domain, self.scratch_len);
        if items.start > items.end || items.end > domain {
            return Err(malformed(format!(
                "items {items:?} are not in the domain 0..{domain}"
            )));
        }
        if let Some((takes, given)) = self.bias.filter(|(takes, given)| takes != given) {
            return Err(malformed(format!(
                "the kernel {} a bias buffer, but the call {} one",
                if takes { "takes" } else { "takes no" },
                if given { "passes" } else { "passes no" },
            )));
        }
        if scratch.len() < scratch_len {
            return Err(malformed(format!(
                "the scratch buffer holds {} f32s; the kernel needs {scratch_len}",
                scratch.len()
            )));
        }
        if scratch_len == 0 {
            return Ok(&mut scratch[..0]);
        }
        // `scratch_len` has ALIGN_FLOATS f32s of slack for the alignment.
        let skip = scratch.as_ptr().align_offset(ALIGN_FLOATS * 4);
        Ok(&mut scratch[skip.min(ALIGN_FLOATS)..][..scratch_len - ALIGN_FLOATS])
    }
}

/// The scratch length for `floats` f32s of block, with room to align it.
fn scratch_for(floats: usize) -> usize {
    if floats == 0 {
        0
    } else {
        floats + ALIGN_FLOATS
    }
}

/// The items of a kernel over the images of `g` that write images
/// `examples` of a batch of `batch`: `None` for another batch; for items
/// of images by position, theirs; otherwise what `items` says.
fn items_of_images(
    g: &Geometry,
    positions: Option<&Positions>,
    (batch, examples): (usize, Range<usize>),
    items: impl FnOnce(Range<usize>) -> Option<Range<usize>>,
) -> Option<Range<usize>> {
    if batch != g.shape.batch || examples.end > batch {
        return None;
    }
    match positions {
        Some(p) => Some(items_of(examples, 1, p.images_per_item())),
        None => items(examples),
    }
}

/// The work items that write batch items `examples`, where each batch
/// item is `per_example` consecutive units (output rows, bands, tile rows)
/// and each work item writes the next `per_item` units; none for no
/// examples.
pub(crate) fn items_of(
    examples: Range<usize>,
    per_example: usize,
    per_item: usize,
) -> Range<usize> {
    if examples.is_empty() || per_item == 0 {
        return 0..0;
    }
    examples.start * per_example / per_item..(examples.end * per_example).div_ceil(per_item)
}

/// Rows per item for `rows` rows whose scratch takes `scratch_cols` f32s a
/// row: enough items to balance, few enough rows to stay in cache.
fn rows_per_item(rows: usize, scratch_cols: usize) -> usize {
    let balanced = rows
        .div_ceil(TARGET_ITEMS)
        .next_multiple_of(MIN_ROWS_PER_ITEM);
    let cached = (SCRATCH_TARGET / scratch_cols.max(1)).max(MIN_ROWS_PER_ITEM);
    balanced
        .min(cached)
        .clamp(MIN_ROWS_PER_ITEM, MAX_ROWS_PER_ITEM)
        .min(rows)
}

/// Whether the forward product of `rows` output rows of `out_channels`
/// values is split over its channels ([`ConvForward`]'s column items),
/// which take no epilogue: the fusion pass asks before it fuses one.
pub fn forward_splits_columns(rows: usize, out_channels: usize) -> bool {
    (1..=COLUMN_SPLIT_ROWS).contains(&rows) && out_channels >= 2 * COLUMNS_PER_ITEM
}

/// The taps of convolution `shape` that read some input, when others only
/// ever read padding (a 3x3 kernel on 1x1 images keeps its centre): the
/// rows of its kernel gradient that are not always zero
/// ([`ConvBackwardFilter::live_rows`]). `None` when every tap reads some
/// input.
///
/// # Errors
/// When the shape is invalid.
pub fn live_taps(shape: &ConvShape) -> Result<Option<LiveTaps>, CodegenError> {
    let g = Geometry::new("live taps", shape)?;
    if g.dead_rows.is_empty() {
        return Ok(None);
    }
    // Each axis's active taps are a run: the positions a tap reads move
    // with it, so the taps that reach the image are consecutive.
    let span = |taps: &[usize]| match (taps.first(), taps.last()) {
        (Some(&first), Some(&last)) if last + 1 - first == taps.len() => Some([first, last + 1]),
        _ => None,
    };
    Ok(match (span(&g.y_taps), span(&g.x_taps)) {
        (Some(ys), Some(xs)) => Some(LiveTaps {
            kernel: shape.kernel,
            in_channels: shape.in_channels,
            ys,
            xs,
        }),
        _ => None,
    })
}

/// The f32s of convolution `shape`'s kernel gradient when it holds only
/// the rows of the taps that read some input
/// ([`ConvBackwardFilter::live_rows`]): its im2col columns by its output
/// channels.
///
/// # Errors
/// When the shape is invalid.
pub fn live_rows_len(shape: &ConvShape) -> Result<usize, CodegenError> {
    let g = Geometry::new("live rows", shape)?;
    // At most the kernel's length, which the geometry checked.
    Ok(g.cols * shape.out_channels)
}

/// The pairs of connected positions per image when the forward pass
/// (`forward`) or the input gradient of convolution `shape` is computed by
/// position ([`positions`]), for the cost model; `None` when it is not.
pub fn position_pairs(shape: &ConvShape, forward: bool) -> Option<usize> {
    let g = Geometry::new("cost", shape).ok()?;
    let side = if forward {
        Side::Forward
    } else {
        Side::BackwardData
    };
    Positions::new(&g, side).map(|p| p.pairs())
}

/// Forward convolution or dense layer: `output = im2col(input) · kernel
/// (+ bias)`, then the epilogue.
///
/// Domain: blocks of `rows_per_item` output rows (`batch * oh * ow` rows in
/// all), or, for a product of few rows ([`forward_splits_columns`]), blocks
/// of a quarter of the output channels, at least [`COLUMNS_PER_ITEM`].
/// Each item builds the im2col block of its rows in the scratch (a 1x1
/// stride-1 convolution reads the input in place), multiplies it by its
/// columns of the kernel in one single-threaded GEMM per run of contiguous
/// weight rows (one, unless taps that only ever read padding were
/// skipped), and runs the epilogue on its rows (row items only: a column
/// item finishes no whole row).
#[derive(Debug, Clone)]
pub struct ConvForward {
    common: Common,
    items: ForwardItems,
    /// Whether items compute without im2col ([`direct`]): a layer with few
    /// taps and input channels, on a CPU with AVX-512.
    direct: bool,
    /// Items of images computed by position ([`positions`]): tiny images
    /// whose im2col would be mostly padding.
    positions: Option<Positions>,
}

/// How a [`ConvForward`] splits its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForwardItems {
    /// Blocks of this many output rows, all channels.
    Rows(usize),
    /// Blocks of this many output channels, all rows.
    Columns(usize),
}

impl ConvForward {
    /// The forward kernel of convolution `shape`; `name` names it in errors.
    pub fn new(name: &str, shape: &ConvShape) -> Result<ConvForward, CodegenError> {
        let common = Common::new(name, shape)?;
        let g = &common.geometry;
        let columns = forward_splits_columns(g.rows, shape.out_channels)
            && (g.rows > FEW_ROWS || direct::available());
        let items = if columns {
            let quarter = (shape.out_channels / 4).next_multiple_of(16);
            ForwardItems::Columns(quarter.max(COLUMNS_PER_ITEM))
        } else {
            let scratch_cols = if g.pointwise { 0 } else { g.cols };
            ForwardItems::Rows(rows_per_item(g.rows, scratch_cols))
        };
        let direct = matches!(items, ForwardItems::Rows(_)) && direct::fits(g);
        let positions = match items {
            ForwardItems::Rows(_) if !direct => Positions::new(g, Side::Forward),
            _ => None,
        };
        Ok(ConvForward {
            common,
            items,
            direct,
            positions,
        })
    }

    /// The forward kernel of dense layer `shape`.
    pub fn dense(name: &str, shape: &DenseShape) -> Result<ConvForward, CodegenError> {
        ConvForward::new(name, &shape.as_conv())
    }

    /// Whether the layer adds a bias (and so the kernel takes a bias buffer).
    pub fn has_bias(&self) -> bool {
        self.common.geometry.shape.bias
    }

    /// Whether the items are blocks of output channels, which take no
    /// epilogue ([`forward_splits_columns`]).
    pub fn splits_columns(&self) -> bool {
        matches!(self.items, ForwardItems::Columns(_))
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        let g = &self.common.geometry;
        if let Some(p) = &self.positions {
            return p.domain(g.shape.batch);
        }
        match self.items {
            ForwardItems::Rows(rows) => g.rows.div_ceil(rows),
            ForwardItems::Columns(columns) => g.shape.out_channels.div_ceil(columns),
        }
    }

    /// The output rows and channels of item `item`.
    pub fn item_block(&self, item: usize) -> (Range<usize>, Range<usize>) {
        let g = &self.common.geometry;
        if let Some(p) = &self.positions {
            let images = p.images(item, g.shape.batch);
            let per_image = g.y.output * g.x.output;
            let rows = images.start * per_image..images.end * per_image;
            return (rows, 0..g.shape.out_channels);
        }
        let block = |size: usize, all: usize| (item * size).min(all)..((item + 1) * size).min(all);
        match self.items {
            ForwardItems::Rows(rows) => (block(rows, g.rows), 0..g.shape.out_channels),
            ForwardItems::Columns(columns) => (0..g.rows, block(columns, g.shape.out_channels)),
        }
    }

    /// Whether its items compute without im2col.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether its items are blocks of images computed by position.
    pub fn by_positions(&self) -> bool {
        self.positions.is_some()
    }

    /// The items that write the output rows of images `examples` of a
    /// batch of `batch` ([`crate::codegen::program::Kernel::example_items`]);
    /// `None` for items of output channels, which each write every image.
    pub fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        let g = &self.common.geometry;
        items_of_images(
            g,
            self.positions.as_ref(),
            (batch, examples),
            |examples| match self.items {
                ForwardItems::Rows(rows) => Some(items_of(examples, g.y.output * g.x.output, rows)),
                ForwardItems::Columns(_) => None,
            },
        )
    }

    /// The f32s of scratch one thread needs to run any range of items.
    pub fn scratch_len(&self) -> usize {
        let g = &self.common.geometry;
        if self.positions.is_some() {
            return 0;
        }
        if self.direct {
            // One padded input row per kernel row.
            let padded = g.padded_width() * g.shape.in_channels;
            return scratch_for(g.shape.kernel[0] * padded);
        }
        let rows = match self.items {
            ForwardItems::Rows(rows) => rows,
            ForwardItems::Columns(_) => g.rows,
        };
        scratch_for(if g.pointwise { 0 } else { rows * g.cols })
    }

    /// [`Self::scratch_len`] in bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_len() * 4
    }

    /// The geometry's figures.
    pub fn lengths(&self) -> Lengths {
        Lengths::of(&self.common.geometry)
    }

    /// Runs items `items`.
    ///
    /// # Safety
    /// Each buffer must hold the f32s [`ForwardBuffers`] says; the output
    /// must not overlap the other buffers. Calls running at the same time on
    /// the same output must be given disjoint item ranges. The contract of
    /// the epilogue ([`Epilogue::new`]) must hold; a kernel whose items are
    /// blocks of channels takes none.
    pub unsafe fn run(
        &self,
        buffers: &ForwardBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        let c = &self.common;
        let given = Some(buffers.bias.is_some());
        let scratch = c.check(&items, self.domain(), given, scratch, self.scratch_len())?;
        if epilogue.is_some() && self.splits_columns() {
            return Err(CodegenError::Malformed {
                kernel: c.name.clone(),
                message: "its items are blocks of output channels, which take no epilogue".into(),
            });
        }
        for item in items {
            let (rows, columns) = self.item_block(item);
            // SAFETY: the caller's contract, passed on.
            unsafe {
                if let Some(p) = &self.positions {
                    let g = &c.geometry;
                    let bias = buffers
                        .bias
                        .map(|b| std::slice::from_raw_parts(b, g.shape.out_channels));
                    let images = p.images(item, g.shape.batch);
                    p.forward(
                        g,
                        images,
                        buffers.input,
                        buffers.kernel,
                        bias,
                        buffers.output,
                    );
                } else if self.direct {
                    self.direct_item(buffers, scratch, rows.clone());
                } else {
                    self.item(buffers, scratch, rows.clone(), columns);
                }
            }
            if let Some(epilogue) = epilogue {
                // SAFETY: the output holds `rows.end * cout` f32s (the item
                // wrote every channel of them); the rest is the caller's
                // contract.
                unsafe { epilogue.apply(buffers.output, rows, c.geometry.shape.out_channels) };
            }
        }
        Ok(())
    }

    /// Every channel of the output rows `rows`, without im2col: one direct
    /// product per stretch of them along an image row, reading the input
    /// rows its kernel rows tap, each copied once into `scratch` with its
    /// padding.
    ///
    /// # Safety
    /// The contract of [`Self::run`], with [`direct::available`] true.
    unsafe fn direct_item(
        &self,
        buffers: &ForwardBuffers,
        scratch: &mut [f32],
        rows: Range<usize>,
    ) {
        let g = &self.common.geometry;
        let s = &g.shape;
        let (cin, cout) = (s.in_channels, s.out_channels);
        // SAFETY: the input holds `input_len` f32s and is only read.
        let input = unsafe { std::slice::from_raw_parts(buffers.input, g.input_len) };
        let line_len = s.width * cin;
        let padded = g.padded_width() * cin;
        let before = (g.x.before * cin).min(padded);
        let run = s.kernel[1] * cin;
        let start = match buffers.bias {
            Some(bias) => direct::Start::Row(bias),
            None => direct::Start::Zero,
        };
        let mut starts = [(std::ptr::null::<f32>(), 0); direct::MAX_LINES];
        let mut row = rows.start;
        while row < rows.end {
            let (image, oy, ox) = g.position(row);
            let len = (g.x.output - ox).min(rows.end - row);
            let mut lines = 0;
            for ky in 0..s.kernel[0] {
                let Some(iy) = g.y.source(oy, ky) else {
                    continue;
                };
                let source = &input[(image * s.height + iy) * line_len..][..line_len];
                let line = &mut scratch[ky * padded..][..padded];
                let end = (before + line_len).min(padded);
                line[..before].fill(0.0);
                line[before..end].copy_from_slice(&source[..end - before]);
                line[end..].fill(0.0);
                starts[lines] = (line[ox * g.x.stride * cin..].as_ptr(), ky * run);
                lines += 1;
            }
            let lhs = direct::Lines {
                starts: &starts[..lines],
                run,
                row_stride: g.x.stride * cin,
            };
            // SAFETY: the padded rows hold `run` f32s past each of the
            // stretch's positions (`padded_width`); the kernel's rows
            // `ky * run..` and the bias hold `cout` f32s each; these output
            // rows are this item's alone.
            unsafe {
                direct::product(
                    len,
                    0..cout,
                    buffers.output.add(row * cout),
                    cout,
                    lhs,
                    direct::Right::Rows(buffers.kernel),
                    start,
                )
            };
            row += len;
        }
    }

    /// Channels `columns` of the output rows `rows`: bias, then one GEMM
    /// per group of taps.
    ///
    /// # Safety
    /// The contract of [`Self::run`].
    unsafe fn item(
        &self,
        buffers: &ForwardBuffers,
        scratch: &mut [f32],
        rows: Range<usize>,
        columns: Range<usize>,
    ) {
        let g = &self.common.geometry;
        let (cin, cout) = (g.shape.in_channels, g.shape.out_channels);
        // SAFETY: the input holds `input_len` f32s and is only read.
        let input = unsafe { std::slice::from_raw_parts(buffers.input, g.input_len) };
        // This item's block of the output: `rows.len()` rows of
        // `columns.len()` f32s, `cout` apart.
        let out = buffers
            .output
            .wrapping_add(rows.start * cout + columns.start);
        let lhs = if g.pointwise {
            Operand::rows(input[rows.start * cin..].as_ptr(), cin)
        } else {
            g.im2col(input, rows.clone(), 0..g.cols, scratch);
            Operand::rows(scratch.as_ptr(), g.cols)
        };
        // SAFETY: the bias holds `cout` f32s.
        let bias = buffers
            .bias
            .map(|b| unsafe { std::slice::from_raw_parts(b, cout) });
        if bias.is_some() || g.groups.is_empty() {
            for r in 0..rows.len() {
                // SAFETY: row `r` of the block is this item's alone.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(out.add(r * cout), columns.len()) };
                match bias {
                    Some(bias) => row.copy_from_slice(&bias[columns.clone()]),
                    None => row.fill(0.0),
                }
            }
        }
        for (i, group) in g.groups.iter().enumerate() {
            let rhs = Operand::rows(
                buffers
                    .kernel
                    .wrapping_add(group.weight_row * cout + columns.start),
                cout,
            );
            let accumulate = buffers.bias.is_some() || i > 0;
            // SAFETY: the operands address the im2col block (or the input's
            // rows) and the group's weight rows; the block of `out` is this
            // item's.
            unsafe {
                matmul(
                    (rows.len(), columns.len(), group.len),
                    out,
                    cout,
                    lhs.at(0, group.col),
                    rhs,
                    accumulate,
                )
            };
        }
    }
}

/// The sizes of a contraction's buffers, in f32s, and its output's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    /// The input (or its gradient).
    pub input: usize,
    /// The kernel (or its gradient).
    pub kernel: usize,
    /// The output (or its gradient).
    pub output: usize,
    /// The output's height and width.
    pub output_size: [usize; 2],
}

impl Lengths {
    fn of(g: &Geometry) -> Lengths {
        Lengths {
            input: g.input_len,
            kernel: g.kernel_len,
            output: g.output_len,
            output_size: [g.y.output, g.x.output],
        }
    }
}

/// How [`ConvBackwardData`] splits its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataItems {
    /// 1x1 stride 1 (and dense): blocks of rows, each one GEMM straight
    /// into the input gradient.
    Rows { rows_per_item: usize },
    /// Bands of `height` input rows, counted over the batch (a band may
    /// span images); a band needs the im2col gradient of at most
    /// `dcol_rows` output rows.
    Bands { height: usize, dcol_rows: usize },
}

/// The gradient of a convolution or dense layer with respect to its input:
/// `input_grad = col2im(output_grad · kernelᵀ)`, then the epilogue (with
/// channels = input channels).
///
/// Domain: for a 1x1 stride-1 convolution (and a dense layer), blocks of
/// input-gradient rows, each one GEMM. Otherwise, bands of input rows
/// counted over the batch (`image * height + y`; a band of a small image
/// spans several images): an item computes the im2col gradient of the
/// output rows its band reads (a band's halo of output rows is computed
/// again by its neighbour, which is why bands are as tall as the scratch
/// allows), then gathers every input pixel of the band by summing its taps
/// in a fixed order. The input gradient is overwritten, never accumulated,
/// so items never write the same element.
#[derive(Debug, Clone)]
pub struct ConvBackwardData {
    common: Common,
    items: DataItems,
    /// Items of images computed by position ([`positions`]): tiny images
    /// whose im2col gradient would be mostly padding.
    positions: Option<Positions>,
    /// The products in bf16 on this backend: the kernel buffer then holds
    /// the weights packed transposed ([`bf16::PackWeights::transposed`]),
    /// and each item packs its rows of the output gradient.
    bf16: Option<(bf16::Backend, bf16::Packer)>,
}

impl ConvBackwardData {
    /// The backward-data kernel of convolution `shape` (its bias, if any,
    /// plays no part).
    pub fn new(name: &str, shape: &ConvShape) -> Result<ConvBackwardData, CodegenError> {
        let common = Common::new(name, shape)?;
        let g = &common.geometry;
        let items = if g.pointwise {
            DataItems::Rows {
                rows_per_item: rows_per_item(g.rows, 0),
            }
        } else {
            bands(g)
        };
        let positions = Positions::new(g, Side::BackwardData);
        Ok(ConvBackwardData {
            common,
            items,
            positions,
            bf16: None,
        })
    }

    /// The backward-data kernel of dense layer `shape`.
    pub fn dense(name: &str, shape: &DenseShape) -> Result<ConvBackwardData, CodegenError> {
        ConvBackwardData::new(name, &shape.as_conv())
    }

    /// The backward-data kernel of convolution `shape` with its products
    /// in bf16 on `backend`, its kernel buffer the weights packed by
    /// [`bf16::PackWeights::transposed`]: the same items (never by
    /// position), each product summed from zero in the backend's order.
    ///
    /// # Errors
    /// When the shape is invalid or this CPU does not run `backend`.
    pub fn bf16(
        name: &str,
        shape: &ConvShape,
        backend: bf16::Backend,
    ) -> Result<ConvBackwardData, CodegenError> {
        backend.require(name)?;
        let mut kernel = ConvBackwardData::new(name, shape)?;
        kernel.positions = None;
        kernel.bf16 = Some((backend, bf16::Packer::new()));
        Ok(kernel)
    }

    /// [`Self::bf16`] for dense layer `shape`.
    pub fn dense_bf16(
        name: &str,
        shape: &DenseShape,
        backend: bf16::Backend,
    ) -> Result<ConvBackwardData, CodegenError> {
        ConvBackwardData::bf16(name, &shape.as_conv(), backend)
    }

    /// The backend of its bf16 products, if they are.
    pub fn bf16_backend(&self) -> Option<bf16::Backend> {
        self.bf16.map(|(backend, _)| backend)
    }

    /// Whether its items are blocks of images computed by position.
    pub fn by_positions(&self) -> bool {
        self.positions.is_some()
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        let g = &self.common.geometry;
        if let Some(p) = &self.positions {
            return p.domain(g.shape.batch);
        }
        match self.items {
            DataItems::Rows { rows_per_item } => g.rows.div_ceil(rows_per_item),
            DataItems::Bands { height, .. } => (g.shape.batch * g.shape.height).div_ceil(height),
        }
    }

    /// The items that write the input-gradient rows of images `examples`
    /// of a batch of `batch` ([`crate::codegen::program::Kernel::example_items`]).
    /// A band that spans two images computes the other image's rows too,
    /// from that image's output gradient alone.
    pub fn example_items(&self, batch: usize, examples: Range<usize>) -> Option<Range<usize>> {
        let g = &self.common.geometry;
        items_of_images(g, self.positions.as_ref(), (batch, examples), |examples| {
            Some(match self.items {
                // 1x1 stride 1: an image's input rows are its output rows.
                DataItems::Rows { rows_per_item } => {
                    items_of(examples, g.y.output * g.x.output, rows_per_item)
                }
                DataItems::Bands { height, .. } => items_of(examples, g.shape.height, height),
            })
        })
    }

    /// The f32s of scratch one thread needs to run any range of items.
    pub fn scratch_len(&self) -> usize {
        let (dcol, transposed) = self.scratch_parts();
        scratch_for(dcol + transposed)
    }

    /// [`Self::scratch_len`] in bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_len() * 4
    }

    /// The f32s of the im2col gradient and of a transposed product
    /// ([`matmul_small_rows`]), or in bf16 of the packed output gradient.
    fn scratch_parts(&self) -> (usize, usize) {
        let g = &self.common.geometry;
        if let Some(p) = &self.positions {
            return (0, p.scratch_floats(g));
        }
        if self.bf16.is_some() {
            let (rows, dcol_len) = match self.items {
                DataItems::Rows { rows_per_item } => (rows_per_item, 0),
                DataItems::Bands { dcol_rows, .. } => {
                    let rows = dcol_rows * g.x.output;
                    (rows, rows * g.cols)
                }
            };
            return (dcol_len, rows * bf16::padded_pairs(g.shape.out_channels));
        }
        let (rows, dcol_len, widest) = match self.items {
            DataItems::Rows { rows_per_item } => (rows_per_item, 0, g.shape.in_channels),
            DataItems::Bands { dcol_rows, .. } => {
                let rows = dcol_rows * g.x.output;
                let widest = g.groups.iter().map(|group| group.len).max().unwrap_or(0);
                (rows, rows * g.cols, widest)
            }
        };
        let transposed = if rows <= SMALL_ROWS { rows * widest } else { 0 };
        (dcol_len, transposed)
    }

    /// The geometry's figures.
    pub fn lengths(&self) -> Lengths {
        Lengths::of(&self.common.geometry)
    }

    /// Runs items `items`.
    ///
    /// # Safety
    /// Each buffer must hold the f32s [`BackwardDataBuffers`] says; the
    /// input gradient must not overlap the other buffers. Calls running at
    /// the same time on the same input gradient must be given disjoint item
    /// ranges. The contract of the epilogue ([`Epilogue::new`]) must hold.
    pub unsafe fn run(
        &self,
        buffers: &BackwardDataBuffers,
        epilogue: Option<&Epilogue>,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        let c = &self.common;
        let scratch = c.check(&items, self.domain(), None, scratch, self.scratch_len())?;
        let (dcol, transposed) = scratch.split_at_mut(self.scratch_parts().0);
        for item in items {
            let rows = match self.items {
                // SAFETY: the caller's contract, passed on.
                _ if self.positions.is_some() => unsafe {
                    self.positions_item(buffers, transposed, item)
                },
                // SAFETY: the caller's contract, passed on.
                DataItems::Rows { rows_per_item } => unsafe {
                    self.rows_item(buffers, transposed, item, rows_per_item)
                },
                // SAFETY: the caller's contract, passed on.
                DataItems::Bands { height, .. } => unsafe {
                    self.band_item(buffers, dcol, transposed, item, height)
                },
            };
            if let Some(epilogue) = epilogue {
                // SAFETY: the input gradient holds `rows.end * channels`
                // f32s; the rest is the caller's contract.
                unsafe { epilogue.apply(buffers.input_grad, rows, c.geometry.shape.in_channels) };
            }
        }
        Ok(())
    }

    /// One block of images computed by position. Returns the rows written.
    ///
    /// # Safety
    /// The contract of [`Self::run`], with `positions` set.
    unsafe fn positions_item(
        &self,
        buffers: &BackwardDataBuffers,
        scratch: &mut [f32],
        item: usize,
    ) -> Range<usize> {
        let g = &self.common.geometry;
        let Some(p) = &self.positions else {
            return 0..0;
        };
        let images = p.images(item, g.shape.batch);
        let per_image = g.shape.height * g.shape.width;
        let rows = images.start * per_image..images.end * per_image;
        // SAFETY: the caller's contract; the scratch holds what the
        // positions need (`scratch_parts`).
        unsafe {
            p.backward_data(
                g,
                images,
                buffers.output_grad,
                buffers.kernel,
                buffers.input_grad,
                scratch,
            )
        };
        rows
    }

    /// One block of rows of a 1x1 stride-1 convolution: `dx = dy · wᵀ`.
    /// Returns the rows written.
    ///
    /// # Safety
    /// The contract of [`Self::run`].
    unsafe fn rows_item(
        &self,
        buffers: &BackwardDataBuffers,
        transposed: &mut [f32],
        item: usize,
        rows_per_item: usize,
    ) -> Range<usize> {
        let g = &self.common.geometry;
        let (cin, cout) = (g.shape.in_channels, g.shape.out_channels);
        let rows = (item * rows_per_item).min(g.rows)..((item + 1) * rows_per_item).min(g.rows);
        if self.bf16.is_some() {
            // SAFETY: these input-gradient rows are this item's alone; the
            // output gradient's rows lie in it.
            unsafe {
                let dx = std::slice::from_raw_parts_mut(
                    buffers.input_grad.add(rows.start * cin),
                    rows.len() * cin,
                );
                self.bf16_product(buffers, rows.clone(), transposed, dx);
            }
            return rows;
        }
        // SAFETY: the rows are this item's; the operands lie in the
        // output gradient and the kernel.
        unsafe {
            matmul_small_rows(
                (rows.len(), cin, cout),
                buffers.input_grad.add(rows.start * cin),
                cin,
                Operand::rows(buffers.output_grad.add(rows.start * cout), cout),
                Operand::transposed(buffers.kernel, cout),
                transposed,
            )
        };
        rows
    }

    /// `dst = dy[rows] · wᵀ` in bf16: the output gradient's rows `rows`
    /// packed into `packed`, times the weights packed transposed (depth
    /// the output channels, columns im2col's); `dst` holds the rows'
    /// products, `g.cols` f32s each.
    ///
    /// # Safety
    /// The contract of [`Self::run`]; `rows` lie in the output gradient,
    /// and `packed` holds their packed rows (`scratch_parts`).
    unsafe fn bf16_product(
        &self,
        buffers: &BackwardDataBuffers,
        rows: Range<usize>,
        packed: &mut [f32],
        dst: &mut [f32],
    ) {
        let Some((backend, packer)) = self.bf16 else {
            return;
        };
        let g = &self.common.geometry;
        let cout = g.shape.out_channels;
        let stride = bf16::padded_pairs(cout);
        let words = &mut bf16::words_mut(packed)[..rows.len() * stride];
        // SAFETY: the caller's contract: the output gradient's rows and
        // the packed weights are only read.
        let (dy, weights) = unsafe {
            (
                std::slice::from_raw_parts(
                    buffers.output_grad.add(rows.start * cout),
                    rows.len() * cout,
                ),
                std::slice::from_raw_parts(
                    buffers.kernel.cast::<u32>(),
                    bf16::panels_words(cout, g.cols),
                ),
            )
        };
        for (row, packed) in dy.chunks_exact(cout).zip(words.chunks_exact_mut(stride)) {
            packer.row(row, packed);
        }
        let left = bf16::Rows::new(words, rows.len(), cout);
        let right = bf16::Panels::new(weights, cout, g.cols);
        bf16::product(backend, &left, &right, 0..rows.len(), dst);
    }

    /// Band `band` of input rows: the im2col gradient of the output rows
    /// the band reads, then col2im. Returns the input-gradient rows written.
    ///
    /// # Safety
    /// The contract of [`Self::run`].
    unsafe fn band_item(
        &self,
        buffers: &BackwardDataBuffers,
        dcol: &mut [f32],
        transposed: &mut [f32],
        band: usize,
        height: usize,
    ) -> Range<usize> {
        let g = &self.common.geometry;
        let s = &g.shape;
        let input_rows = s.batch * s.height;
        let rows = (band * height).min(input_rows)..((band + 1) * height).min(input_rows);
        let output_rows = g.readers(rows.clone());
        let m = output_rows.len() * g.x.output;
        let output_grad = buffers
            .output_grad
            .wrapping_add(output_rows.start * g.x.output * s.out_channels);
        let first = output_rows.start * g.x.output;
        if self.bf16.is_some() {
            // SAFETY: the output gradient holds these rows; `dcol` holds
            // `dcol_rows * ow * cols` f32s.
            unsafe {
                self.bf16_product(
                    buffers,
                    first..first + m,
                    transposed,
                    &mut dcol[..m * g.cols],
                )
            };
        } else {
            for group in &g.groups {
                let kernel = buffers
                    .kernel
                    .wrapping_add(group.weight_row * s.out_channels);
                // SAFETY: `dcol` holds `dcol_rows * ow * cols` f32s and
                // `output_rows.len() <= dcol_rows`; the operands lie in the
                // output gradient and the kernel.
                unsafe {
                    matmul_small_rows(
                        (m, group.len, s.out_channels),
                        dcol.as_mut_ptr().add(group.col),
                        g.cols,
                        Operand::rows(output_grad, s.out_channels),
                        Operand::transposed(kernel, s.out_channels),
                        transposed,
                    )
                };
            }
        }
        let pixels = rows.start * s.width..rows.end * s.width;
        // SAFETY: these rows of the input gradient belong to this item alone.
        let out = unsafe {
            std::slice::from_raw_parts_mut(
                buffers.input_grad.add(pixels.start * s.in_channels),
                pixels.len() * s.in_channels,
            )
        };
        g.col2im(&dcol[..m * g.cols], output_rows.start, rows, out);
        pixels
    }
}

/// Chooses the bands of [`ConvBackwardData`]: whole images when one fits
/// the scratch target (a band that cuts an image recomputes the output rows
/// on both sides of the cut), as many as fit and still give `TARGET_ITEMS`
/// items; otherwise the tallest part of an image that fits. Either way an
/// item's product has at least `MIN_ROWS_PER_ITEM` rows where the layer has
/// that many (a product of a few rows runs at a fraction of the GEMM's
/// speed).
fn bands(g: &Geometry) -> DataItems {
    let (height, rows) = (g.shape.height, g.shape.batch * g.shape.height);
    let needed = |band: usize| {
        (0..rows.div_ceil(band))
            .map(|b| g.readers(b * band..((b + 1) * band).min(rows)).len())
            .max()
            .unwrap_or(0)
    };
    let fits = |band: usize| needed(band) * g.x.output * g.cols <= DATA_SCRATCH_TARGET;
    let shortest = (1..rows)
        .find(|&band| needed(band) * g.x.output >= MIN_ROWS_PER_ITEM)
        .unwrap_or(rows);
    let balanced = rows.div_ceil(TARGET_ITEMS).max(shortest);
    let band = if fits(height) || shortest > height {
        // Whole images: the most that fit and balance, at least `shortest` rows.
        let images = |band: usize| band.div_ceil(height);
        let most = (images(shortest)..=images(balanced).max(images(shortest)))
            .rev()
            .find(|&n| n == images(shortest) || fits(n * height))
            .unwrap_or(1);
        most * height
    } else {
        (shortest..=balanced.min(height))
            .rev()
            .find(|&band| band == shortest || fits(band))
            .unwrap_or(shortest)
    };
    DataItems::Bands {
        height: band,
        dcol_rows: needed(band),
    }
}

/// The gradient of a convolution or dense layer with respect to its kernel
/// (`kernel_grad = im2col(input)ᵀ · output_grad`) and bias (`bias_grad =`
/// the column sums of `output_grad`).
///
/// Domain: blocks of `cols_per_item` weight-gradient rows (of the active
/// taps), then one item for the bias gradient if the layer has a bias. The
/// reduction over output rows is never split: an item runs over all of
/// them in blocks of `rows_per_block` rows, in order, each block's im2col
/// columns multiplied into the item's rows with one GEMM that accumulates.
/// Each item also zeroes its share of the rows of taps that only ever read
/// padding ([`Geometry::dead_share`]), unless the kernel writes only the
/// live taps' rows ([`Self::live_rows`]).
///
/// A layer with few taps and input channels (a first layer, as for
/// [`ConvForward`]'s direct items) computes without im2col: an item per
/// block of output channels, which sums the transposed product of each
/// kernel row's runs of the padded input with the output gradient
/// ([`direct::gradient`]) image by image, in order.
#[derive(Debug, Clone)]
pub struct ConvBackwardFilter {
    common: Common,
    cols_per_item: usize,
    rows_per_block: usize,
    /// Whether items are blocks of output channels computed without
    /// im2col.
    direct: bool,
    /// The products in bf16 on this backend: each block of rows packs its
    /// im2col columns as a left operand's rows and its rows of the output
    /// gradient as panels, and the blocks' products are summed in f32.
    bf16: Option<(bf16::Backend, bf16::Packer)>,
    /// How the input is stored (bf16 only with `bf16` products).
    input: Storage,
    /// Whether the kernel gradient holds only the rows of the taps that
    /// read some input ([`Self::live_rows`]).
    live_rows: bool,
}

impl ConvBackwardFilter {
    /// The backward-filter kernel of convolution `shape`.
    pub fn new(name: &str, shape: &ConvShape) -> Result<ConvBackwardFilter, CodegenError> {
        let common = Common::new(name, shape)?;
        let g = &common.geometry;
        let cols_per_item = g
            .cols
            .div_ceil(TARGET_ITEMS)
            .next_multiple_of(MIN_COLS_PER_ITEM)
            .clamp(MIN_COLS_PER_ITEM, MAX_COLS_PER_ITEM);
        let rows_per_block = if g.pointwise {
            g.rows
        } else {
            (SCRATCH_TARGET / cols_per_item.min(g.cols))
                .next_multiple_of(MIN_ROWS_PER_ITEM)
                .min(g.rows)
        };
        let direct = direct::fits(g);
        Ok(ConvBackwardFilter {
            common,
            cols_per_item,
            rows_per_block,
            direct,
            bf16: None,
            input: Storage::F32,
            live_rows: false,
        })
    }

    /// This kernel, when `live`, writing only the kernel gradient's rows
    /// of the taps that read some input, in im2col's column order
    /// ([`live_rows_len`] f32s), and nothing for the taps that only read
    /// padding, whose gradient is zero: through im2col, since a direct
    /// item writes every tap's rows.
    pub fn live_rows(self, live: bool) -> ConvBackwardFilter {
        if !live {
            return self;
        }
        ConvBackwardFilter {
            live_rows: true,
            direct: false,
            ..self
        }
    }

    /// The kernel-gradient row of im2col column `col` of group `group`.
    fn gradient_row(&self, group: &geometry::Group, col: usize) -> usize {
        if self.live_rows {
            col
        } else {
            group.weight_row + col - group.col
        }
    }

    /// The backward-filter kernel of convolution `shape` with its products
    /// in bf16 on `backend`: items of im2col columns, each summing the
    /// products of fixed blocks of rows in order (a 1x1 convolution's too).
    ///
    /// # Errors
    /// When the shape is invalid or this CPU does not run `backend`.
    pub fn bf16(
        name: &str,
        shape: &ConvShape,
        backend: bf16::Backend,
    ) -> Result<ConvBackwardFilter, CodegenError> {
        backend.require(name)?;
        let mut kernel = ConvBackwardFilter::new(name, shape)?;
        let g = &kernel.common.geometry;
        kernel.rows_per_block = (SCRATCH_TARGET / kernel.cols_per_item.min(g.cols))
            .next_multiple_of(MIN_ROWS_PER_ITEM)
            .min(g.rows);
        kernel.direct = false;
        kernel.bf16 = Some((backend, bf16::Packer::new()));
        Ok(kernel)
    }

    /// [`Self::bf16`] for dense layer `shape`.
    pub fn dense_bf16(
        name: &str,
        shape: &DenseShape,
        backend: bf16::Backend,
    ) -> Result<ConvBackwardFilter, CodegenError> {
        ConvBackwardFilter::bf16(name, &shape.as_conv(), backend)
    }

    /// This kernel reading its input stored as `input`: bf16 values,
    /// which a kernel whose products are in bf16 copies where it would
    /// round f32s (the same operands, so the same result, bit for bit).
    ///
    /// # Errors
    /// When the input is bf16 and the products are not.
    pub fn reading(self, input: Storage) -> Result<ConvBackwardFilter, CodegenError> {
        if input == Storage::Bf16 && self.bf16.is_none() {
            return Err(CodegenError::Malformed {
                kernel: self.common.name.clone(),
                message: "a bf16 input needs products in bf16".into(),
            });
        }
        Ok(ConvBackwardFilter { input, ..self })
    }

    /// The backend of its bf16 products, if they are.
    pub fn bf16_backend(&self) -> Option<bf16::Backend> {
        self.bf16.map(|(backend, _)| backend)
    }

    /// The f32 slots of a bf16 item's scratch: the im2col block, the
    /// packed columns, the packed output gradient, the sums and one
    /// block's product.
    fn bf16_scratch(&self) -> [usize; 5] {
        let g = &self.common.geometry;
        let (rows, cols) = (self.rows_per_block, self.cols_per_item.min(g.cols));
        let cout = g.shape.out_channels;
        [
            if g.pointwise { 0 } else { rows * cols },
            cols * bf16::padded_pairs(rows),
            bf16::panels_words(rows, cout),
            cols * cout,
            cols * cout,
        ]
    }

    /// Whether items compute without im2col, a block of output channels
    /// each.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The backward-filter kernel of dense layer `shape`.
    pub fn dense(name: &str, shape: &DenseShape) -> Result<ConvBackwardFilter, CodegenError> {
        ConvBackwardFilter::new(name, &shape.as_conv())
    }

    /// The number of items.
    pub fn domain(&self) -> usize {
        self.product_items() + usize::from(self.common.geometry.shape.bias)
    }

    /// The items of the kernel gradient (the rest is the bias's).
    fn product_items(&self) -> usize {
        let g = &self.common.geometry;
        if self.direct {
            g.shape.out_channels.div_ceil(direct::GRADIENT_COLUMNS)
        } else {
            g.cols.div_ceil(self.cols_per_item)
        }
    }

    /// Whether the layer has a bias (and so the kernel computes its
    /// gradient, into a buffer it takes).
    pub fn has_bias(&self) -> bool {
        self.common.geometry.shape.bias
    }

    /// The f32s of scratch one thread needs to run any range of items.
    pub fn scratch_len(&self) -> usize {
        let g = &self.common.geometry;
        if self.bf16.is_some() {
            return scratch_for(self.bf16_scratch().iter().sum());
        }
        if self.direct {
            // One image's padded input rows.
            scratch_for(g.shape.height * g.padded_width() * g.shape.in_channels)
        } else if g.pointwise {
            0
        } else {
            scratch_for(self.rows_per_block * self.cols_per_item.min(g.cols))
        }
    }

    /// [`Self::scratch_len`] in bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_len() * 4
    }

    /// The geometry's figures; the kernel's, its gradient's as written.
    pub fn lengths(&self) -> Lengths {
        let g = &self.common.geometry;
        Lengths {
            kernel: if self.live_rows {
                g.cols * g.shape.out_channels
            } else {
                g.kernel_len
            },
            ..Lengths::of(g)
        }
    }

    /// Runs items `items`.
    ///
    /// # Safety
    /// Each buffer must hold the f32s [`BackwardFilterBuffers`] says; the
    /// gradients must not overlap the other buffers or each other. Calls
    /// running at the same time on the same gradients must be given
    /// disjoint item ranges.
    pub unsafe fn run(
        &self,
        buffers: &BackwardFilterBuffers,
        scratch: &mut [f32],
        items: Range<usize>,
    ) -> Result<(), CodegenError> {
        let c = &self.common;
        let given = Some(buffers.bias_grad.is_some());
        let scratch = c.check(&items, self.domain(), given, scratch, self.scratch_len())?;
        let product_items = self.product_items();
        for item in items {
            match buffers.bias_grad {
                // SAFETY: the caller's contract, passed on.
                Some(bias_grad) if item == product_items => unsafe {
                    self.bias_item(buffers.output_grad, bias_grad)
                },
                // SAFETY: the caller's contract, passed on.
                _ if self.direct => unsafe { self.direct_item(buffers, scratch, item) },
                // SAFETY: the caller's contract, passed on.
                _ if self.bf16.is_some() => unsafe { self.bf16_item(buffers, scratch, item) },
                // SAFETY: the caller's contract, passed on.
                _ => unsafe { self.cols_item(buffers, scratch, item) },
            }
        }
        Ok(())
    }

    /// Output channels `32 * item..` (two vectors of them) of the kernel
    /// gradient, without im2col: for each image, its input rows are copied
    /// once each with their padding, and for each kernel row one direct
    /// product sums that row's runs against the image's output gradient,
    /// added to the earlier images'. An item reads its own cache lines of
    /// each output-gradient row, so the items read the output gradient
    /// once between them, and one image's share stays in cache for every
    /// kernel row (items of kernel rows, each reading all of it, were no
    /// faster than im2col: 1.39 ms a step for the seed CNN's conv1, 1.29
    /// with im2col).
    ///
    /// # Safety
    /// The contract of [`Self::run`], with [`direct::available`] true.
    unsafe fn direct_item(
        &self,
        buffers: &BackwardFilterBuffers,
        scratch: &mut [f32],
        item: usize,
    ) {
        let g = &self.common.geometry;
        let s = &g.shape;
        let (cin, cout) = (s.in_channels, s.out_channels);
        let columns =
            item * direct::GRADIENT_COLUMNS..((item + 1) * direct::GRADIENT_COLUMNS).min(cout);
        // SAFETY: the input holds `input_len` f32s and is only read.
        let input = unsafe { std::slice::from_raw_parts(buffers.input, g.input_len) };
        let line_len = s.width * cin;
        let padded = g.padded_width() * cin;
        let before = (g.x.before * cin).min(padded);
        let run = s.kernel[1] * cin;
        let mut stretches = Vec::with_capacity(g.y.output);
        let mut written = vec![false; s.kernel[0]];
        for image in 0..s.batch {
            for (iy, source) in input[image * s.height * line_len..][..s.height * line_len]
                .chunks_exact(line_len)
                .enumerate()
            {
                let line = &mut scratch[iy * padded..][..padded];
                let end = (before + line_len).min(padded);
                line[..before].fill(0.0);
                line[before..end].copy_from_slice(&source[..end - before]);
                line[end..].fill(0.0);
            }
            for (ky, written) in written.iter_mut().enumerate() {
                stretches.clear();
                stretches.extend((0..g.y.output).filter_map(|oy| {
                    let iy = g.y.source(oy, ky)?;
                    let first = (image * g.y.output + oy) * g.x.output * cout + columns.start;
                    Some(direct::Stretch {
                        line: scratch[iy * padded..].as_ptr(),
                        output_grad: buffers.output_grad.wrapping_add(first),
                        len: g.x.output,
                    })
                }));
                if stretches.is_empty() {
                    continue;
                }
                // Dense taps: kernel row `ky`'s gradient is rows `ky * run..`.
                let dst = buffers
                    .kernel_grad
                    .wrapping_add(ky * run * cout + columns.start);
                // SAFETY: each padded row holds `run` f32s past every
                // position of its stretch (`padded_width`), the output
                // gradient's rows this item's columns; these columns of the
                // kernel gradient are this item's alone.
                unsafe {
                    direct::gradient(
                        &stretches,
                        (run, g.x.stride * cin),
                        (columns.len(), cout),
                        dst,
                        *written,
                    )
                };
                *written = true;
            }
        }
        for (ky, _) in written.iter().enumerate().filter(|(_, &w)| !w) {
            for row in 0..run {
                let at = (ky * run + row) * cout + columns.start;
                // SAFETY: as above: these columns are this item's.
                unsafe {
                    std::slice::from_raw_parts_mut(buffers.kernel_grad.add(at), columns.len())
                        .fill(0.0)
                };
            }
        }
    }

    /// Zeroes item `item`'s share of the weight-gradient rows of the taps
    /// that only read padding ([`Geometry::dead_share`]).
    ///
    /// # Safety
    /// The contract of [`Self::run`].
    unsafe fn zero_dead_share(&self, buffers: &BackwardFilterBuffers, item: usize) {
        let cout = self.common.geometry.shape.out_channels;
        for dead in self.common.geometry.dead_share(item, self.product_items()) {
            // SAFETY: this share of the dead taps' rows lies inside the
            // kernel gradient and belongs to this item alone.
            unsafe {
                std::slice::from_raw_parts_mut(
                    buffers.kernel_grad.add(dead.start * cout),
                    dead.len() * cout,
                )
                .fill(0.0)
            };
        }
    }

    /// The weight-gradient rows of im2col columns block `item`.
    ///
    /// # Safety
    /// The contract of [`Self::run`].
    unsafe fn cols_item(&self, buffers: &BackwardFilterBuffers, scratch: &mut [f32], item: usize) {
        let g = &self.common.geometry;
        let (cin, cout) = (g.shape.in_channels, g.shape.out_channels);
        let cols = item * self.cols_per_item..((item + 1) * self.cols_per_item).min(g.cols);
        if !self.live_rows {
            // SAFETY: the contract of `run`.
            unsafe { self.zero_dead_share(buffers, item) };
        }
        // SAFETY: the input holds `input_len` f32s, and is only read.
        let input = unsafe { std::slice::from_raw_parts(buffers.input, g.input_len) };
        for first in (0..g.rows).step_by(self.rows_per_block) {
            let rows = first..(first + self.rows_per_block).min(g.rows);
            let col_t = if g.pointwise {
                Operand::transposed(input[first * cin + cols.start..].as_ptr(), cin)
            } else {
                g.im2col(input, rows.clone(), cols.clone(), scratch);
                Operand::transposed(scratch.as_ptr(), cols.len())
            };
            let output_grad = Operand::rows(buffers.output_grad.wrapping_add(first * cout), cout);
            for group in &g.groups {
                let lo = cols.start.max(group.col);
                let hi = cols.end.min(group.col + group.len);
                if lo >= hi {
                    continue;
                }
                let weight_row = self.gradient_row(group, lo);
                // SAFETY: the weight-gradient rows of these columns belong
                // to this item alone; the operands lie in the im2col block
                // (or the input) and the output gradient.
                unsafe {
                    matmul(
                        (hi - lo, cout, rows.len()),
                        buffers.kernel_grad.add(weight_row * cout),
                        cout,
                        col_t.at(lo - cols.start, 0),
                        output_grad,
                        first > 0,
                    )
                };
            }
        }
    }

    /// The weight-gradient rows of im2col columns block `item`, in bf16:
    /// for each block of rows, its columns of im2col packed as a left
    /// operand's rows (the transpose) times its rows of the output
    /// gradient packed as panels, summed over the blocks in order in f32,
    /// then set down in the weight rows of the columns' taps.
    ///
    /// # Safety
    /// The contract of [`Self::run`], with `bf16` set.
    unsafe fn bf16_item(&self, buffers: &BackwardFilterBuffers, scratch: &mut [f32], item: usize) {
        let Some((backend, packer)) = self.bf16 else {
            return;
        };
        let g = &self.common.geometry;
        let (cin, cout) = (g.shape.in_channels, g.shape.out_channels);
        let cols = item * self.cols_per_item..((item + 1) * self.cols_per_item).min(g.cols);
        let n = cols.len();
        // SAFETY: the caller's contract: the input (f32s, or bf16 values
        // as the kernel was made to read) and the output gradient are only
        // read.
        let (input, output_grad) = unsafe {
            (
                match self.input {
                    Storage::F32 => {
                        bf16::Source::F32(std::slice::from_raw_parts(buffers.input, g.input_len))
                    }
                    Storage::Bf16 => bf16::Source::Bf16(std::slice::from_raw_parts(
                        buffers.input.cast::<u16>(),
                        g.input_len,
                    )),
                },
                std::slice::from_raw_parts(buffers.output_grad, g.output_len),
            )
        };
        let [block_len, left_len, right_len, sums_len, _] = self.bf16_scratch();
        let (block, rest) = scratch.split_at_mut(block_len);
        let (left, rest) = rest.split_at_mut(left_len);
        let (right, rest) = rest.split_at_mut(right_len);
        let (sums, product) = rest.split_at_mut(sums_len);
        let (left, right) = (bf16::words_mut(left), bf16::words_mut(right));
        let (sums, product) = (&mut sums[..n * cout], &mut product[..n * cout]);
        for (b, first) in (0..g.rows).step_by(self.rows_per_block).enumerate() {
            let rows = first..(first + self.rows_per_block).min(g.rows);
            let r = rows.len();
            let left = &mut left[..n * bf16::padded_pairs(r)];
            match input {
                bf16::Source::F32(x) if g.pointwise => packer.columns(
                    bf16::Source::F32(&x[first * cin..]),
                    (r, cin),
                    cols.clone(),
                    left,
                ),
                bf16::Source::Bf16(x) if g.pointwise => packer.columns(
                    bf16::Source::Bf16(&x[first * cin..]),
                    (r, cin),
                    cols.clone(),
                    left,
                ),
                bf16::Source::F32(x) => {
                    let block = &mut block[..r * n];
                    g.im2col(x, rows.clone(), cols.clone(), block);
                    packer.columns(bf16::Source::F32(block), (r, n), 0..n, left);
                }
                bf16::Source::Bf16(x) => {
                    let block = &mut bf16::halves_mut(bf16::words_mut(block))[..r * n];
                    g.im2col(x, rows.clone(), cols.clone(), block);
                    packer.columns(bf16::Source::Bf16(block), (r, n), 0..n, left);
                }
            }
            let dy = &output_grad[first * cout..][..r * cout];
            let right = &mut right[..bf16::panels_words(r, cout)];
            packer.panels(
                r,
                0..cout.div_ceil(bf16::PANEL),
                |p| &dy[p * cout..][..cout],
                right,
            );
            let (lhs, rhs) = (
                bf16::Rows::new(left, n, r),
                bf16::Panels::new(right, r, cout),
            );
            if b == 0 {
                bf16::product(backend, &lhs, &rhs, 0..n, sums);
            } else {
                bf16::product(backend, &lhs, &rhs, 0..n, product);
                add_assign(sums, product);
            }
        }
        if !self.live_rows {
            // SAFETY: the contract of `run`.
            unsafe { self.zero_dead_share(buffers, item) };
        }
        for group in &g.groups {
            let (lo, hi) = (
                cols.start.max(group.col),
                cols.end.min(group.col + group.len),
            );
            if lo >= hi {
                continue;
            }
            let weight_row = self.gradient_row(group, lo);
            // SAFETY: the weight-gradient rows of these columns belong to
            // this item alone.
            let rows = unsafe {
                std::slice::from_raw_parts_mut(
                    buffers.kernel_grad.add(weight_row * cout),
                    (hi - lo) * cout,
                )
            };
            rows.copy_from_slice(&sums[(lo - cols.start) * cout..][..(hi - lo) * cout]);
        }
    }

    /// The bias gradient: column sums of the output gradient, in blocks of
    /// rows summed in order.
    ///
    /// # Safety
    /// The contract of [`Self::run`].
    unsafe fn bias_item(&self, output_grad: *const f32, bias_grad: *mut f32) {
        let g = &self.common.geometry;
        let cout = g.shape.out_channels;
        // SAFETY: the output gradient holds `output_len` f32s; the bias
        // gradient `cout` and belongs to this item alone.
        let (output_grad, bias_grad) = unsafe {
            (
                std::slice::from_raw_parts(output_grad, g.output_len),
                std::slice::from_raw_parts_mut(bias_grad, cout),
            )
        };
        bias_gradient(output_grad, cout, bias_grad);
    }
}

/// The bias gradient of an NHWC output gradient with `cout` channels: its
/// column sums, in blocks of [`BIAS_BLOCK_ROWS`] rows summed in order.
fn bias_gradient(output_grad: &[f32], cout: usize, bias_grad: &mut [f32]) {
    bias_grad.fill(0.0);
    let mut partial = vec![0.0; cout];
    for block in output_grad.chunks(BIAS_BLOCK_ROWS * cout) {
        partial.fill(0.0);
        block
            .chunks_exact(cout)
            .for_each(|row| add_assign(&mut partial, row));
        add_assign(bias_grad, &partial);
    }
}
