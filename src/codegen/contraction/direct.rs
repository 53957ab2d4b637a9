//! The forward product of a convolution with few taps and input channels
//! (a first layer: 7x7 taps of one channel), without im2col: its im2col
//! rows are a handful of floats each, and copying them cost more than
//! the product (the seed CNN's conv1 ran at about 40% of the machine's
//! peak behind im2col, `docs/performance.md`). For a stretch of output
//! positions along one image row, the taps of each kernel row read one
//! zero-padded input row at a fixed stride, so the im2col block is a view
//! of a few padded rows ([`Lines`]) that the AVX-512 kernel ([`product`])
//! reads in place.
//!
//! The same view serves the layer's kernel gradient ([`gradient`]): each
//! kernel row's block of it is the transposed product of that row's runs
//! with the output gradient, summed over every output position.

use std::ops::Range;

use super::geometry::Geometry;

/// The inner size up to which [`super::ConvForward`] computes directly:
/// taps times input channels of a layer's kernel.
pub(super) const DIRECT_TAPS: usize = 64;

/// The largest kernel height computed directly (one padded row each).
pub(super) const MAX_LINES: usize = 16;

/// The left operand of a direct product: row `i` (an output position) of
/// its im2col block, columns `l * run .. (l + 1) * run` (one kernel row's
/// taps and channels) are the `run` f32s from `starts[l].0 + i *
/// row_stride`, and multiply the right operand's rows from `starts[l].1`
/// on. Kernel rows that only read padding are left out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lines<'a> {
    pub starts: &'a [(*const f32, usize)],
    pub run: usize,
    pub row_stride: usize,
}

/// Whether the convolution of geometry `g` computes directly (its
/// forward items of rows, its kernel gradient): few taps and input
/// channels, whole rows of taps, a kernel of at most [`MAX_LINES`] rows,
/// and a CPU that runs [`product`].
pub(super) fn fits(g: &Geometry) -> bool {
    !g.pointwise
        && g.dense_taps()
        && g.cols <= DIRECT_TAPS
        && g.shape.kernel[0] <= MAX_LINES
        && available()
}

/// Whether this CPU runs [`product`].
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What a direct product adds its sums to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start {
    /// Nothing: the destination is overwritten with the sums.
    Zero,
    /// A row of `n` f32s (the bias), added to every row.
    Row(*const f32),
}

/// How the right operand of a [`product`] lies in memory.
#[derive(Debug, Clone, Copy)]
pub(super) enum Right {
    /// Row-major, its rows as far apart as the destination's.
    Rows(*const f32),
    /// In panels of [`PANEL`] columns (the last one narrower when the
    /// columns are not a multiple of it): each panel's `depth` rows lie
    /// one after the other, panel `p` from `first + p * PANEL * depth`. A
    /// block of columns is then one contiguous run, where rows of a wide
    /// row-major operand fall on a fraction of L1's sets and are read
    /// again from L2 for every block of rows (`benches/direct_stride.c`).
    Panels {
        first: *const f32,
        depth: usize,
        columns: usize,
    },
}

/// The columns of a panel of [`Right::Panels`]: a block of the product's.
pub(super) const PANEL: usize = VECTORS * LANES;

impl Right {
    /// Where row 0 of the block of columns from `col` starts, and how far
    /// apart its rows are, for a product whose destination rows are
    /// `stride` apart. For panels, `col` is a multiple of [`PANEL`].
    #[inline(always)]
    fn block(self, col: usize, stride: usize) -> (*const f32, usize) {
        match self {
            Right::Rows(first) => (first.wrapping_add(col), stride),
            Right::Panels {
                first,
                depth,
                columns,
            } => (
                first.wrapping_add(col * depth),
                columns.saturating_sub(col).min(PANEL),
            ),
        }
    }
}

/// `dst[i][j] = start[j] + Σ lhs[i][p] · rhs[p][j]` for `i` in `0..m`, `j`
/// in `columns`: `dst` row-major with rows `stride` apart, `rhs` as
/// [`Right`] says (for panels, `columns` starts at a multiple of
/// [`PANEL`]).
///
/// Blocks of up to [`ROWS`] rows by up to [`VECTORS`] vectors of 16
/// columns are summed in registers; each element sums its products in
/// order from zero with fused multiply-adds, then adds its start, whatever
/// the blocks: the result does not depend on how the caller splits rows
/// or columns.
///
/// # Safety
/// [`available`] is true. Every element the shapes address lies in a live
/// allocation: `lhs`'s runs for rows `0..m`, `rhs`'s rows `starts[l].1 ..
/// starts[l].1 + run` at `columns`, `start`'s row at `columns`, `dst`'s `m` rows at
/// `columns`; `dst` overlaps none of them, and no other thread accesses
/// that part of `dst` during the call.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn product(
    m: usize,
    columns: Range<usize>,
    dst: *mut f32,
    stride: usize,
    lhs: Lines,
    rhs: Right,
    start: Start,
) {
    if let Right::Panels { .. } = rhs {
        debug_assert!(
            columns.start.is_multiple_of(PANEL),
            "panels from {columns:?}"
        );
    }
    let operands = Operands {
        dst,
        stride,
        lhs,
        rhs,
        start,
    };
    // SAFETY: the caller's contract.
    unsafe { avx512::product(m, columns, &operands) }
}

/// [`product`] where there is no AVX-512: never called, since
/// [`available`] is false.
///
/// # Safety
/// As above.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn product(
    _m: usize,
    _columns: Range<usize>,
    _dst: *mut f32,
    _stride: usize,
    _lhs: Lines,
    _rhs: Right,
    _start: Start,
) {
    unreachable!("the direct product needs AVX-512")
}

/// One output row's stretch of positions for [`gradient`]: `len`
/// positions whose im2col runs start at `line + i * row_stride`, and whose
/// output-gradient rows start at `output_grad + i * stride`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stretch {
    pub line: *const f32,
    pub output_grad: *const f32,
    pub len: usize,
}

/// `dst[j][c] (+)= Σ_s Σ_i s.line[i * row_stride + j] · s.output_grad[i *
/// stride + c]` for `j` in `0..run`, `c` in `0..n`: one kernel row's block
/// of a kernel gradient, summed over `stretches` in order. Blocks of up to
/// [`GRADIENT_RUN`] entries of the run by up to [`VECTORS`] vectors of 16
/// columns are summed in registers from zero, every product in order, and
/// then stored (`accumulate` false) or added to `dst`: the result does
/// not depend on the blocks. `dst` is row-major with rows `stride` apart.
///
/// # Safety
/// [`available`] is true. Every element the shapes address lies in a live
/// allocation: each stretch's `len` runs of `run` f32s and rows of `n`
/// f32s, `dst`'s `run` rows of `n`; `dst` overlaps none of them, and no
/// other thread accesses that part of `dst` during the call.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn gradient(
    stretches: &[Stretch],
    (run, row_stride): (usize, usize),
    (n, stride): (usize, usize),
    dst: *mut f32,
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe { avx512::gradient(stretches, (run, row_stride), (n, stride), dst, accumulate) }
}

/// [`gradient`] where there is no AVX-512: never called, since
/// [`available`] is false.
///
/// # Safety
/// As above.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn gradient(
    _stretches: &[Stretch],
    _run: (usize, usize),
    _columns: (usize, usize),
    _dst: *mut f32,
    _accumulate: bool,
) {
    unreachable!("the direct product needs AVX-512")
}

/// The output channels of a kernel gradient's direct item: two vectors,
/// so that each broadcast of an input value feeds two multiply-adds (the
/// seed CNN's conv1 took 0.70 ms a step with one vector, 0.58 with two).
pub(super) const GRADIENT_COLUMNS: usize = 2 * LANES;

/// Entries of a run summed at once by [`gradient`]: a 7-tap first layer's
/// run in one block, with at most [`VECTORS`] vectors of the output
/// gradient 28 accumulators (14 for the kernel-gradient items' two).
const GRADIENT_RUN: usize = 7;

/// Rows summed at once: `ROWS * VECTORS` accumulators, the right operand's
/// vectors and a broadcast fit the 32 vector registers (the rows left over
/// below it make one block of their own).
pub(super) const ROWS: usize = 6;
/// Vectors of 16 columns summed at once.
const VECTORS: usize = 4;
/// Columns per vector.
const LANES: usize = 16;
/// How many rows of the right operand ahead a product prefetches.
const PREFETCH_ROWS: usize = 16;

/// A product's operands.
struct Operands<'a> {
    dst: *mut f32,
    stride: usize,
    lhs: Lines<'a>,
    rhs: Right,
    start: Start,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm_prefetch, _MM_HINT_T0,
    };
    use std::ops::Range;

    use super::{Operands, Start, Stretch, GRADIENT_RUN, LANES, PREFETCH_ROWS, ROWS, VECTORS};

    /// [`super::product`].
    ///
    /// # Safety
    /// Its contract.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(m: usize, columns: Range<usize>, o: &Operands) {
        let whole = m / ROWS * ROWS;
        for col in columns.clone().step_by(VECTORS * LANES) {
            let cols = (columns.end - col).min(VECTORS * LANES);
            // Whole blocks of ROWS rows, then one block of the rows left.
            // SAFETY: the blocks lie in the product's shape.
            unsafe {
                blocks::<ROWS>(o, (0..whole).step_by(ROWS), col, cols);
                let rest = std::iter::once(whole);
                match m - whole {
                    0 => {}
                    1 => blocks::<1>(o, rest, col, cols),
                    2 => blocks::<2>(o, rest, col, cols),
                    3 => blocks::<3>(o, rest, col, cols),
                    4 => blocks::<4>(o, rest, col, cols),
                    _ => blocks::<5>(o, rest, col, cols),
                }
            }
        }
    }

    /// Blocks of `R` rows starting at each of `rows`, by columns `col..col
    /// + cols`, on as many vectors as the columns need.
    ///
    /// # Safety
    /// As for [`product`], with the blocks inside its shape.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn blocks<const R: usize>(
        o: &Operands,
        rows: impl Iterator<Item = usize>,
        col: usize,
        cols: usize,
    ) {
        for row in rows {
            // SAFETY: the caller's contract.
            unsafe {
                match cols.div_ceil(LANES) {
                    4 => block::<R, 4>(o, row, col, cols),
                    3 => block::<R, 3>(o, row, col, cols),
                    2 => block::<R, 2>(o, row, col, cols),
                    _ => block::<R, 1>(o, row, col, cols),
                }
            }
        }
    }

    /// Rows `row..row + R` by columns `col..col + cols` (`V` vectors, the
    /// last masked to the columns).
    ///
    /// # Safety
    /// As for [`product`], with the block inside its shape.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize, const V: usize>(
        o: &Operands,
        row: usize,
        col: usize,
        cols: usize,
    ) {
        let masks = masks::<V>(cols);
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let lhs = o.lhs;
        let (rhs, rhs_stride) = o.rhs.block(col, o.stride);
        for &(start, rhs_row) in lhs.starts {
            let first = start.wrapping_add(row * lhs.row_stride);
            for j in 0..lhs.run {
                let w_row = rhs.wrapping_add((rhs_row + j) * rhs_stride);
                // A row of the block some rows on (a block of a wide
                // right operand is a strided stream the hardware does not
                // fetch ahead; a prefetch never faults, whatever address).
                let ahead = w_row.wrapping_add(PREFETCH_ROWS * rhs_stride);
                for v in 0..V {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(v * LANES).cast());
                }
                // SAFETY: the row's columns of the block.
                let w = unsafe { load_row(&masks, w_row) };
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: element (row + r, j) of this kernel row's run.
                    let a = _mm512_set1_ps(unsafe { *first.wrapping_add(r * lhs.row_stride + j) });
                    for v in 0..V {
                        acc[v] = _mm512_fmadd_ps(a, w[v], acc[v]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = o.dst.wrapping_add((row + r) * o.stride + col);
            let start = match o.start {
                Start::Zero => None,
                Start::Row(first) => Some(first.wrapping_add(col)),
            };
            // SAFETY: the block's row, which the caller gives this call
            // alone, and the start row's columns of the block.
            unsafe { store_row(&masks, acc, out, start) };
        }
    }

    /// [`super::gradient`].
    ///
    /// # Safety
    /// Its contract.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gradient(
        stretches: &[Stretch],
        (run, row_stride): (usize, usize),
        (n, stride): (usize, usize),
        dst: *mut f32,
        accumulate: bool,
    ) {
        let shape = GradientShape {
            stretches,
            row_stride,
            stride,
            dst,
            accumulate,
        };
        for col in (0..n).step_by(VECTORS * LANES) {
            let cols = (n - col).min(VECTORS * LANES);
            for first in (0..run).step_by(GRADIENT_RUN) {
                // SAFETY: the block lies in the gradient's shape.
                unsafe {
                    match (run - first).min(GRADIENT_RUN) {
                        7 => gradient_vectors::<7>(&shape, first, col, cols),
                        6 => gradient_vectors::<6>(&shape, first, col, cols),
                        5 => gradient_vectors::<5>(&shape, first, col, cols),
                        4 => gradient_vectors::<4>(&shape, first, col, cols),
                        3 => gradient_vectors::<3>(&shape, first, col, cols),
                        2 => gradient_vectors::<2>(&shape, first, col, cols),
                        _ => gradient_vectors::<1>(&shape, first, col, cols),
                    }
                }
            }
        }
    }

    /// What every block of a [`gradient`] shares.
    struct GradientShape<'a> {
        stretches: &'a [Stretch],
        row_stride: usize,
        stride: usize,
        dst: *mut f32,
        accumulate: bool,
    }

    /// [`gradient_block`] on as many vectors as the columns need.
    ///
    /// # Safety
    /// As for [`gradient`], with the block inside its shape.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn gradient_vectors<const R: usize>(
        o: &GradientShape,
        first: usize,
        col: usize,
        cols: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            match cols.div_ceil(LANES) {
                4 => gradient_block::<R, 4>(o, first, col, cols),
                3 => gradient_block::<R, 3>(o, first, col, cols),
                2 => gradient_block::<R, 2>(o, first, col, cols),
                _ => gradient_block::<R, 1>(o, first, col, cols),
            }
        }
    }

    /// Entries `first..first + R` of the run by columns `col..col + cols`
    /// (`V` vectors, the last masked to the columns).
    ///
    /// # Safety
    /// As for [`gradient`], with the block inside its shape.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn gradient_block<const R: usize, const V: usize>(
        o: &GradientShape,
        first: usize,
        col: usize,
        cols: usize,
    ) {
        let masks = masks::<V>(cols);
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for s in o.stretches {
            for i in 0..s.len {
                let dy_row = s.output_grad.wrapping_add(i * o.stride + col);
                // SAFETY: the row's columns of the block.
                let dy = unsafe { load_row(&masks, dy_row) };
                let line = s.line.wrapping_add(i * o.row_stride + first);
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: entry `first + r` of position `i`'s run.
                    let x = _mm512_set1_ps(unsafe { *line.wrapping_add(r) });
                    for v in 0..V {
                        acc[v] = _mm512_fmadd_ps(x, dy[v], acc[v]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = o.dst.wrapping_add((first + r) * o.stride + col);
            // SAFETY: the block's row, which the caller gives this call
            // alone.
            unsafe { store_row(&masks, acc, out, o.accumulate.then_some(out.cast_const())) };
        }
    }

    /// The masks of `V` vectors over `cols` columns (the last vector's
    /// lanes past them off).
    #[inline(always)]
    fn masks<const V: usize>(cols: usize) -> [__mmask16; V] {
        let mut masks: [__mmask16; V] = [0; V];
        for (v, mask) in masks.iter_mut().enumerate() {
            let lanes = cols.saturating_sub(v * LANES).min(LANES);
            *mask = ((1u32 << lanes) - 1) as __mmask16;
        }
        masks
    }

    /// The `V` vectors of the row at `at`, zero past the masks.
    ///
    /// # Safety
    /// The masks' lanes from `at` lie in a live allocation.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_row<const V: usize>(masks: &[__mmask16; V], at: *const f32) -> [__m512; V] {
        let mut row = [_mm512_setzero_ps(); V];
        for (v, lanes) in row.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            *lanes = unsafe { _mm512_maskz_loadu_ps(masks[v], at.wrapping_add(v * LANES)) };
        }
        row
    }

    /// Stores `acc`, plus the row at `add` if there is one, into the row at
    /// `out`, in the masks' lanes.
    ///
    /// # Safety
    /// The masks' lanes from `out` (and `add`) lie in a live allocation,
    /// and no other thread accesses those from `out`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_row<const V: usize>(
        masks: &[__mmask16; V],
        acc: &[__m512; V],
        out: *mut f32,
        add: Option<*const f32>,
    ) {
        let mut sums = *acc;
        if let Some(add) = add {
            // SAFETY: the caller's contract. (A loop, not a closure: a
            // closure would not inherit the target feature.)
            let row = unsafe { load_row(masks, add) };
            for (sum, value) in sums.iter_mut().zip(row) {
                *sum = _mm512_add_ps(value, *sum);
            }
        }
        for (v, sum) in sums.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { _mm512_mask_storeu_ps(out.wrapping_add(v * LANES), masks[v], *sum) };
        }
    }
}
