//! The bridge to the `gemm` crate: one single-threaded f32 product of
//! strided operands. The kernels parallelise over their own domains, so the
//! crate's threading is never used, and every call is deterministic.

use gemm::Parallelism;

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
    for i in (0..m).step_by(TILE) {
        // SAFETY: rows `i..` of `dst` hold `n` elements each.
        let rows: Vec<&mut [f32]> = (i..(i + TILE).min(m))
            .map(|r| unsafe { std::slice::from_raw_parts_mut(dst.add(r * dst_stride), n) })
            .collect();
        transpose_rows(&scratch[..m * n], m, i, rows);
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

/// The one call into the gemm crate; `dst`'s pointer is written through.
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
