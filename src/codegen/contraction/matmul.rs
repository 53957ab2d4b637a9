//! The bridge to the `gemm` crate: one single-threaded f32 product of
//! strided operands. The kernels parallelise over their own domains, so the
//! crate's threading is never used, and every call is deterministic.
//! Products of a few rows by a row-major right operand (a batch-1
//! convolution or dense layer) skip the crate for one pass over that
//! operand ([`few_rows`]).

use gemm::Parallelism;

use super::direct::{self, Start};

/// A matrix operand: element `(i, j)` is at `ptr + i * row_stride + j * col_stride`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Operand {
    ptr: *const f32,
    row_stride: usize,
    col_stride: usize,
}

impl Operand {
    /// A row-major matrix whose rows are `row_stride` elements apart.
    pub(super) fn rows(ptr: *const f32, row_stride: usize) -> Operand {
        Operand {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `stride` elements
    /// apart.
    pub(super) fn transposed(ptr: *const f32, stride: usize) -> Operand {
        Operand {
            ptr,
            row_stride: 1,
            col_stride: stride,
        }
    }

    /// The submatrix from row `row` and column `col` on.
    pub(super) fn at(self, row: usize, col: usize) -> Operand {
        Operand {
            ptr: self
                .ptr
                .wrapping_add(row * self.row_stride + col * self.col_stride),
            ..self
        }
    }
}

/// Products with at most this many rows and a column-major right operand
/// are computed into a column-major scratch and transposed back: the gemm
/// crate's AVX-512 path runs them 2-4x faster that way (the measurements
/// are in `docs/backend.md`).
pub(super) const SMALL_ROWS: usize = 128;

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`) for an
/// `m x k` by `k x n` product; `dst` is row-major with rows `dst_stride`
/// apart.
///
/// # Safety
/// Every element the shapes and strides address must lie in a live
/// allocation; `dst` must not overlap `lhs` or `rhs`, and no other thread
/// may access the addressed part of `dst` during the call.
pub(super) unsafe fn matmul(
    dims: (usize, usize, usize),
    dst: *mut f32,
    dst_stride: usize,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    let dst = Operand::rows(dst, dst_stride);
    // SAFETY: the caller's contract.
    unsafe { product(dims, dst, lhs, rhs, accumulate) }
}

/// `dst = lhs · rhs` like [`matmul`], for a right operand that is the
/// transpose of a row-major matrix: when `m <= SMALL_ROWS` and `scratch`
/// holds `m * n` f32s, the product goes through `scratch` column-major.
///
/// # Safety
/// As for [`matmul`]; `scratch` must not overlap any operand.
pub(super) unsafe fn matmul_small_rows(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_stride: usize,
    lhs: Operand,
    rhs: Operand,
    scratch: &mut [f32],
) {
    if m > SMALL_ROWS || scratch.len() < m * n {
        // SAFETY: the caller's contract.
        return unsafe { matmul((m, n, k), dst, dst_stride, lhs, rhs, false) };
    }
    let transposed = Operand::transposed(scratch.as_ptr(), m);
    // SAFETY: the scratch holds the m x n column-major product; the rest
    // is the caller's contract.
    unsafe { product((m, n, k), transposed, lhs, rhs, false) };
    // SAFETY: the caller's contract.
    unsafe { transpose_into(&scratch[..m * n], m, n, dst, dst_stride) };
}

/// `dst = Σ lhs · rhs` over `terms` (each an `m x k` by `k x n` product;
/// zero when there are none), summed term by term in a column-major
/// `scratch` of `m * n` f32s and transposed into `dst` once: the product
/// of few rows by a transposed right operand runs fastest that way
/// ([`SMALL_ROWS`]).
///
/// # Safety
/// As for [`matmul`] for every term; `scratch` holds `m * n` f32s and
/// overlaps no operand.
pub(super) unsafe fn sum_small_rows(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_stride: usize,
    terms: impl ExactSizeIterator<Item = (Operand, Operand)>,
    scratch: &mut [f32],
) {
    let scratch = &mut scratch[..m * n];
    if terms.len() == 0 {
        scratch.fill(0.0);
    }
    let columns = Operand::transposed(scratch.as_ptr(), m);
    for (i, (lhs, rhs)) in terms.enumerate() {
        // SAFETY: the scratch holds the m x n column-major sum; the rest is
        // the caller's contract.
        unsafe { product((m, n, k), columns, lhs, rhs, i > 0) };
    }
    // SAFETY: the caller's contract.
    unsafe { transpose_into(scratch, m, n, dst, dst_stride) };
}

/// Rows `0..m` of `dst` (rows `dst_stride` apart, `n` f32s each) from the
/// column-major `m x n` matrix `source`.
///
/// # Safety
/// Those rows of `dst` lie in a live allocation, overlap `source`
/// nowhere, and no other thread accesses them during the call.
unsafe fn transpose_into(source: &[f32], m: usize, n: usize, dst: *mut f32, dst_stride: usize) {
    for i in (0..m).step_by(TILE) {
        // SAFETY: rows `i..` of `dst` hold `n` elements each (the callers'
        // contracts).
        let rows: Vec<&mut [f32]> = (i..(i + TILE).min(m))
            .map(|r| unsafe { std::slice::from_raw_parts_mut(dst.add(r * dst_stride), n) })
            .collect();
        transpose_rows(source, m, i, rows);
    }
}

/// The side of the tiles [`transpose_rows`] moves at once.
const TILE: usize = 8;

/// Rows `first..first + rows.len()` of the transpose of the column-major
/// `m x n` matrix `source`, in tiles of `TILE x TILE`.
fn transpose_rows(source: &[f32], m: usize, first: usize, mut rows: Vec<&mut [f32]>) {
    let n = rows.first().map_or(0, |r| r.len());
    let full = rows.len() == TILE;
    for j in (0..n).step_by(TILE) {
        if full && j + TILE <= n {
            let mut tile = [[0.0f32; TILE]; TILE];
            for (t, column) in tile.iter_mut().enumerate() {
                column.copy_from_slice(&source[(j + t) * m + first..][..TILE]);
            }
            for (i, row) in rows.iter_mut().enumerate() {
                let out: [f32; TILE] = std::array::from_fn(|t| tile[t][i]);
                row[j..j + TILE].copy_from_slice(&out);
            }
        } else {
            for (i, row) in rows.iter_mut().enumerate() {
                for (c, value) in row[j..(j + TILE).min(n)].iter_mut().enumerate() {
                    *value = source[(j + c) * m + first + i];
                }
            }
        }
    }
}

/// Products of at most this many rows whose right operand and destination
/// are row-major run on [`few_rows`]: at batch 1, a convolution of a small
/// image is a few rows times megabytes of weights, and the time is the one
/// read of the weights, which the gemm crate makes three (it packs them
/// first): it ran ResNet-34's 2x2 layers at 7.5 GFLOP/s there
/// (`docs/performance.md`).
pub(super) const FEW_ROWS: usize = 8;

/// The destination's columns [`few_rows`] sums at once: `FEW_ROWS` rows of
/// them (16 KiB) stay in L1 while the right operand streams past.
const FEW_ROWS_COLUMNS: usize = 512;

/// The one call into the gemm crate (or [`few_rows`]); `dst`'s pointer is
/// written through.
///
/// # Safety
/// As for [`matmul`].
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let dst_ptr = dst.ptr.cast_mut();
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: element (i, j) of `dst` is addressed (the caller's contract).
                    unsafe { *dst_ptr.add(i * dst.row_stride + j * dst.col_stride) = 0.0 };
                }
            }
        }
        return;
    }
    if m <= FEW_ROWS && rhs.col_stride == 1 && dst.col_stride == 1 {
        // SAFETY: the caller's contract.
        return unsafe { few_rows((m, n, k), dst, lhs, rhs, accumulate) };
    }
    // Strides fit in isize: the kernels check every buffer length against
    // isize::MAX when they are built.
    let stride = |s: usize| s as isize;
    // SAFETY: the caller's contract; `gemm` computes
    // dst = alpha * dst + beta * lhs * rhs, reading dst only when asked.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst_ptr,
            stride(dst.col_stride),
            stride(dst.row_stride),
            accumulate,
            lhs.ptr,
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.ptr,
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// `dst (+)= lhs · rhs` for few rows (`m <= FEW_ROWS`), `rhs` and `dst`
/// row-major: for each block of columns, each row of `rhs` in order is
/// scaled by each row's `lhs` value and added to that row of `dst`. Every
/// element sums its `k` products in order, with fused multiply-adds where
/// the CPU has them.
///
/// Where the CPU has AVX-512 and the product overwrites `dst` with at
/// most [`direct::ROWS`] rows of a row-major `lhs`, the same sums run on
/// [`direct::product`], which holds the rows of a block of 64 columns in
/// registers while it reads the block's part of each row of `rhs`, rather
/// than loading and storing `dst` once per row of `rhs`: bitwise the same
/// result. ResNet-34's batch-1 2x2 layers (4 rows, 2.4 MB of weights)
/// read their weights at 14 GB/s on the loop below on the Intel machine
/// of `docs/performance.md`, where one core streams 30 GB/s.
///
/// # Safety
/// As for [`matmul`], with `rhs.col_stride == dst.col_stride == 1`.
unsafe fn few_rows(
    dims: (usize, usize, usize),
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    let (m, n, k) = dims;
    if !accumulate
        && m <= direct::ROWS
        && lhs.col_stride == 1
        && rhs.row_stride == dst.row_stride
        && direct::available()
    {
        let starts = [(lhs.ptr, 0)];
        let lines = direct::Lines {
            starts: &starts,
            run: k,
            row_stride: lhs.row_stride,
        };
        // SAFETY: `lhs`'s rows hold `k` f32s, `rhs` `k` rows and `dst` `m`
        // rows of `n` at the common stride (the caller's contract), and
        // the CPU has AVX-512.
        return unsafe {
            direct::product(
                m,
                0..n,
                dst.ptr.cast_mut(),
                dst.row_stride,
                lines,
                direct::Right::Rows(rhs.ptr),
                Start::Zero,
            )
        };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA; the rest is the caller's
        // contract.
        return unsafe { few_rows_fma(dims, dst, lhs, rhs, accumulate) };
    }
    // SAFETY: the caller's contract.
    unsafe { few_rows_with::<false>(dims, dst, lhs, rhs, accumulate) }
}

/// [`few_rows`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA, and the contract of [`few_rows`] holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn few_rows_fma(
    dims: (usize, usize, usize),
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe { few_rows_with::<true>(dims, dst, lhs, rhs, accumulate) }
}

/// The body of [`few_rows`], with fused multiply-adds when `FMA`.
///
/// # Safety
/// As for [`few_rows`].
#[inline(always)]
unsafe fn few_rows_with<const FMA: bool>(
    (m, n, k): (usize, usize, usize),
    dst: Operand,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    let dst_ptr = dst.ptr.cast_mut();
    for first in (0..n).step_by(FEW_ROWS_COLUMNS) {
        let cols = (n - first).min(FEW_ROWS_COLUMNS);
        // SAFETY: row `i` of `dst` holds these columns (the caller's
        // contract); one row is borrowed at a time.
        let row = |i: usize| unsafe {
            std::slice::from_raw_parts_mut(dst_ptr.add(i * dst.row_stride + first), cols)
        };
        if !accumulate {
            (0..m).for_each(|i| row(i).fill(0.0));
        }
        for p in 0..k {
            // SAFETY: row `p` of `rhs` holds these columns.
            let weights = unsafe {
                std::slice::from_raw_parts(rhs.ptr.add(p * rhs.row_stride + first), cols)
            };
            for i in 0..m {
                // SAFETY: element (i, p) of `lhs` is addressed.
                let a = unsafe { *lhs.ptr.add(i * lhs.row_stride + p * lhs.col_stride) };
                let out = row(i);
                if FMA {
                    for (d, &w) in out.iter_mut().zip(weights) {
                        *d = a.mul_add(w, *d);
                    }
                } else {
                    for (d, &w) in out.iter_mut().zip(weights) {
                        *d += a * w;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Few-row products on AVX-512's registers give bitwise the sums of
    /// the row-by-row loop, for every row count they take and columns
    /// that end inside a vector and a block.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn few_rows_in_registers_are_bitwise_the_loop() {
        if !(direct::available() && std::arch::is_x86_feature_detected!("fma")) {
            return;
        }
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 300.0 - 1.7;
        for m in 1..=direct::ROWS {
            for (n, k) in [(5, 3), (64, 37), (100, 256), (300, 9)] {
                let lhs: Vec<f32> = (0..m * (k + 2)).map(value).collect();
                let rhs: Vec<f32> = (0..k * n).map(|i| value(i + 5)).collect();
                let run = |registers: bool| {
                    let mut out = vec![f32::NAN; m * n];
                    let operands = (
                        Operand::rows(out.as_mut_ptr(), n),
                        // Rows two values longer than the product reads.
                        Operand::rows(lhs.as_ptr(), k + 2),
                        Operand::rows(rhs.as_ptr(), n),
                    );
                    let (dst, lhs, rhs) = operands;
                    // SAFETY: the operands hold the elements the shapes
                    // address, and the CPU has AVX-512 and FMA.
                    unsafe {
                        if registers {
                            few_rows((m, n, k), dst, lhs, rhs, false);
                        } else {
                            few_rows_fma((m, n, k), dst, lhs, rhs, false);
                        }
                    }
                    out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(run(true), run(false), "{m} x {n} x {k}");
            }
        }
    }

    /// Few-row products, strided left operands, accumulating or not, and
    /// more columns than one block, against a product in f64.
    #[test]
    fn few_rows_match_a_plain_product() {
        for (m, n, k, accumulate) in [(1, 3, 5, false), (4, 600, 37, true), (8, 1030, 9, false)] {
            let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
            let lhs: Vec<f32> = (0..m * k).map(value).collect();
            let rhs: Vec<f32> = (0..k * n).map(|i| value(i + 3)).collect();
            let start: Vec<f32> = (0..m * n).map(|i| value(i + 11)).collect();
            let mut out = start.clone();
            // The left operand is the transpose of a row-major k x m matrix.
            let lhs_t: Vec<f32> = (0..k * m).map(|i| lhs[(i % m) * k + i / m]).collect();
            // SAFETY: the operands hold the elements the shapes address.
            unsafe {
                product(
                    (m, n, k),
                    Operand::rows(out.as_mut_ptr(), n),
                    Operand::transposed(lhs_t.as_ptr(), m),
                    Operand::rows(rhs.as_ptr(), n),
                    accumulate,
                )
            };
            for i in 0..m {
                for j in 0..n {
                    let sum: f64 = (0..k)
                        .map(|p| f64::from(lhs[i * k + p]) * f64::from(rhs[p * n + j]))
                        .sum();
                    let expected = sum
                        + if accumulate {
                            f64::from(start[i * n + j])
                        } else {
                            0.0
                        };
                    let actual = f64::from(out[i * n + j]);
                    assert!(
                        (actual - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                        "({i}, {j})"
                    );
                }
            }
        }
    }
}
