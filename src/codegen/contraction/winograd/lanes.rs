//! The arithmetic of the Winograd transforms, written once over [`Lanes`]:
//! a few channels at a time, with AVX-512 ([`Avx512`], sixteen channels),
//! AVX ([`Avx`], eight) or one by one ([`One`], the channels left over, and
//! CPUs without AVX2). Both do
//! the same IEEE operations in the same order on each channel (no fused
//! multiply-adds), so their results are bitwise the same.

use std::mem::MaybeUninit;
use std::ops::Range;

/// Values of consecutive channels, operated on together.
pub(super) trait Lanes: Copy {
    /// How many channels.
    const WIDTH: usize;
    /// Zeros.
    fn zero() -> Self;
    /// The first `WIDTH` values of `values`.
    fn load(values: &[f32]) -> Self;
    /// Writes the lanes to the first `WIDTH` places of `out`.
    fn store(self, out: &mut [f32]);
    /// Lane-wise `self + other`.
    fn add(self, other: Self) -> Self;
    /// Lane-wise `self - other`.
    fn sub(self, other: Self) -> Self;
    /// Lane-wise `self * factor`.
    fn scale(self, factor: f32) -> Self;
}

/// One channel.
#[derive(Debug, Clone, Copy)]
pub(super) struct One(f32);

impl Lanes for One {
    const WIDTH: usize = 1;
    #[inline(always)]
    fn zero() -> One {
        One(0.0)
    }
    #[inline(always)]
    fn load(values: &[f32]) -> One {
        One(values[0])
    }
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        out[0] = self.0;
    }
    #[inline(always)]
    fn add(self, other: One) -> One {
        One(self.0 + other.0)
    }
    #[inline(always)]
    fn sub(self, other: One) -> One {
        One(self.0 - other.0)
    }
    #[inline(always)]
    fn scale(self, factor: f32) -> One {
        One(self.0 * factor)
    }
}

/// Eight channels in an AVX register. Only code compiled for AVX2 (the
/// kernels' `*_avx2` functions, which run after the CPU was checked)
/// makes one, which is what makes the intrinsics below sound.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx(std::arch::x86_64::__m256);

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx {
    const WIDTH: usize = 8;
    #[inline(always)]
    fn zero() -> Avx {
        // SAFETY: the CPU has AVX (see the type's comment).
        Avx(unsafe { std::arch::x86_64::_mm256_setzero_ps() })
    }
    #[inline(always)]
    fn load(values: &[f32]) -> Avx {
        let values = &values[..8];
        // SAFETY: eight readable values; the CPU has AVX.
        Avx(unsafe { std::arch::x86_64::_mm256_loadu_ps(values.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        let out = &mut out[..8];
        // SAFETY: eight writable places; the CPU has AVX.
        unsafe { std::arch::x86_64::_mm256_storeu_ps(out.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, other: Avx) -> Avx {
        // SAFETY: the CPU has AVX.
        Avx(unsafe { std::arch::x86_64::_mm256_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Avx) -> Avx {
        // SAFETY: the CPU has AVX.
        Avx(unsafe { std::arch::x86_64::_mm256_sub_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn scale(self, factor: f32) -> Avx {
        // SAFETY: the CPU has AVX.
        unsafe {
            let factor = std::arch::x86_64::_mm256_set1_ps(factor);
            Avx(std::arch::x86_64::_mm256_mul_ps(self.0, factor))
        }
    }
}

/// Sixteen channels in an AVX-512 register. Only code compiled for
/// AVX-512F (the `*_avx512` functions, which run after the CPU was
/// checked) makes one, which is what makes the intrinsics below sound.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx512(std::arch::x86_64::__m512);

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    const WIDTH: usize = 16;
    #[inline(always)]
    fn zero() -> Avx512 {
        // SAFETY: the CPU has AVX-512F (see the type's comment).
        Avx512(unsafe { std::arch::x86_64::_mm512_setzero_ps() })
    }
    #[inline(always)]
    fn load(values: &[f32]) -> Avx512 {
        let values = &values[..16];
        // SAFETY: sixteen readable values; the CPU has AVX-512F.
        Avx512(unsafe { std::arch::x86_64::_mm512_loadu_ps(values.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        let out = &mut out[..16];
        // SAFETY: sixteen writable places; the CPU has AVX-512F.
        unsafe { std::arch::x86_64::_mm512_storeu_ps(out.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, other: Avx512) -> Avx512 {
        // SAFETY: the CPU has AVX-512F.
        Avx512(unsafe { std::arch::x86_64::_mm512_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Avx512) -> Avx512 {
        // SAFETY: the CPU has AVX-512F.
        Avx512(unsafe { std::arch::x86_64::_mm512_sub_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn scale(self, factor: f32) -> Avx512 {
        // SAFETY: the CPU has AVX-512F.
        unsafe {
            let factor = std::arch::x86_64::_mm512_set1_ps(factor);
            Avx512(std::arch::x86_64::_mm512_mul_ps(self.0, factor))
        }
    }
}

/// The widest lanes the CPU has, checked once when a kernel is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vectors {
    /// One channel at a time.
    Scalar,
    /// Eight channels at a time ([`Avx`]).
    Avx2,
    /// Sixteen channels at a time ([`Avx512`]), then eight.
    Avx512,
}

impl Vectors {
    /// The widest lanes this CPU has.
    pub(super) fn detect() -> Vectors {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Vectors::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Vectors::Avx2;
            }
        }
        Vectors::Scalar
    }
}

/// A computation on the channels `c..c + V::WIDTH` of something, written
/// once for any [`Lanes`]; [`over_channels`] runs it over all of them.
/// Its `run` must be `#[inline(always)]`, so that it compiles for the
/// vector extension inside [`over_channels`]'s loops.
pub(super) trait ChannelBlock {
    /// Computes channels `c..c + V::WIDTH`.
    fn run<V: Lanes>(&mut self, c: usize);
}

/// Runs `block` on channels `0..channels`: sixteen at a time with AVX-512
/// and eight with AVX2 where `vectors` says the CPU has them, the rest one
/// by one. Every width does the same operations on each channel, so the
/// results are bitwise those of one channel at a time.
pub(super) fn over_channels<B: ChannelBlock>(block: &mut B, channels: usize, vectors: Vectors) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `vectors` says what the CPU has.
    let first = unsafe {
        match vectors {
            Vectors::Avx512 => avx512_blocks(block, channels),
            Vectors::Avx2 => avx2_blocks(block, channels, 0),
            Vectors::Scalar => 0,
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let first = {
        let _ = vectors;
        0
    };
    for c in first..channels {
        block.run::<One>(c);
    }
}

/// Runs `block` on channels `channels`, as [`over_channels`] runs it from
/// channel 0 (the same operations on each channel, whatever the start).
pub(super) fn over_channel_range<B: ChannelBlock>(
    block: &mut B,
    channels: Range<usize>,
    vectors: Vectors,
) {
    /// `block` with channel 0 at `first`.
    struct From<'b, B> {
        block: &'b mut B,
        first: usize,
    }
    impl<B: ChannelBlock> ChannelBlock for From<'_, B> {
        #[inline(always)]
        fn run<V: Lanes>(&mut self, c: usize) {
            self.block.run::<V>(self.first + c);
        }
    }
    let mut from = From {
        block,
        first: channels.start,
    };
    over_channels(&mut from, channels.len(), vectors);
}

/// The whole blocks of sixteen channels of [`over_channels`], then those
/// of eight; returns the first channel left.
///
/// # Safety
/// The CPU has AVX-512F (and so AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn avx512_blocks<B: ChannelBlock>(block: &mut B, channels: usize) -> usize {
    let mut c = 0;
    while c + Avx512::WIDTH <= channels {
        block.run::<Avx512>(c);
        c += Avx512::WIDTH;
    }
    // SAFETY: the CPU has AVX2.
    unsafe { avx2_blocks(block, channels, c) }
}

/// The whole blocks of eight channels of [`over_channels`] from channel
/// `first` on; returns the first channel left.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_blocks<B: ChannelBlock>(block: &mut B, channels: usize, first: usize) -> usize {
    let mut c = first;
    while c + Avx::WIDTH <= channels {
        block.run::<Avx>(c);
        c += Avx::WIDTH;
    }
    c
}

/// A 1-D transform: multiplication by an `K x N` matrix, lane by lane.
/// Each is a type of its own, so that the calls resolve statically and
/// inline into the code compiled for AVX2.
pub(super) trait Transform<const N: usize, const K: usize> {
    /// The matrix times `x`.
    fn apply<V: Lanes>(x: [V; N]) -> [V; K];
}

/// `T d Tᵀ` for the matrix `T` of `F`, column by column (element `[j][i]`
/// is row `i`, column `j`).
#[inline(always)]
pub(super) fn transform_2d<V: Lanes, F: Transform<N, K>, const N: usize, const K: usize>(
    d: [[V; N]; N],
) -> [[V; K]; K] {
    // Along each row, then along each column of the result.
    let mut rows = [[V::zero(); K]; N];
    for (row, block) in rows.iter_mut().zip(d) {
        *row = F::apply(block);
    }
    let mut columns = [[V::zero(); K]; K];
    for (j, column) in columns.iter_mut().enumerate() {
        let mut values = [V::zero(); N];
        for (value, row) in values.iter_mut().zip(&rows) {
            *value = row[j];
        }
        *column = F::apply(values);
    }
    columns
}

/// The `A x A` tile of `values` at `pixels` (`A <= P`), channels `c..c +
/// V::WIDTH`: zeros where a pixel is `None` (the padding, or past the
/// image's edge). Every element is written once, into an uninitialised
/// tile: a tile zeroed first costs a call to memset per block of channels
/// (it lives on the stack, and the loop that fills it is not unrolled).
/// No closures either: they would not inherit the caller's target
/// features, and each load would become a call.
#[inline(always)]
pub(super) fn load_tile<V: Lanes, const A: usize, const P: usize>(
    values: &[f32],
    pixels: &[[Option<usize>; P]; P],
    c: usize,
) -> [[V; A]; A] {
    assert!(A <= P, "a {A}x{A} tile of {P}x{P} pixels");
    let mut tile = [[MaybeUninit::<V>::uninit(); A]; A];
    for (row, pixels) in tile.iter_mut().zip(pixels) {
        for (lanes, pixel) in row.iter_mut().zip(pixels) {
            lanes.write(match pixel {
                Some(at) => V::load(&values[at + c..]),
                None => V::zero(),
            });
        }
    }
    // SAFETY: the loops above wrote all `A x A` elements (`pixels` has at
    // least `A` rows of at least `A`), and `MaybeUninit<V>` has `V`'s
    // layout.
    unsafe { tile.as_ptr().cast::<[[V; A]; A]>().read() }
}

/// The `A x A` grid of `values` whose element `(i, j)` starts at `first +
/// (i * A + j) * stride`, written once each like [`load_tile`]'s.
#[inline(always)]
pub(super) fn load_grid<V: Lanes, const A: usize>(
    values: &[f32],
    first: usize,
    stride: usize,
) -> [[V; A]; A] {
    let mut grid = [[MaybeUninit::<V>::uninit(); A]; A];
    for (i, row) in grid.iter_mut().enumerate() {
        for (j, lanes) in row.iter_mut().enumerate() {
            lanes.write(V::load(&values[first + (i * A + j) * stride..]));
        }
    }
    // SAFETY: the loops above wrote all `A x A` elements, and
    // `MaybeUninit<V>` has `V`'s layout.
    unsafe { grid.as_ptr().cast::<[[V; A]; A]>().read() }
}

/// Rows `rows` of `T d Tᵀ` for the matrix `T` of `F` (`K x N`), the others
/// zero: what one work item of the kernel gradient needs, each item owning
/// some rows of the transformed positions. The transform down each column
/// runs once for all of them, then one along each row; a row's bits do not
/// depend on which other rows are computed with it. Plain loops, no
/// closures (like [`transform_2d`]): a closure would not inherit the
/// caller's target features, and it returns the rows rather than passing
/// each to one.
#[inline(always)]
pub(super) fn transform_rows<V: Lanes, F: Transform<N, K>, const N: usize, const K: usize>(
    rows: Range<usize>,
    d: &[[V; N]; N],
) -> [[V; K]; K] {
    let mut columns = [[V::zero(); K]; N];
    for (l, column) in columns.iter_mut().enumerate() {
        let mut values = [V::zero(); N];
        for (value, row) in values.iter_mut().zip(d) {
            *value = row[l];
        }
        *column = F::apply(values);
    }
    let mut out = [[V::zero(); K]; K];
    for i in rows {
        let mut values = [V::zero(); N];
        for (value, column) in values.iter_mut().zip(&columns) {
            *value = column[i];
        }
        out[i] = F::apply(values);
    }
    out
}

// The transforms of F(2x2, 3x3), interpolating at 0, 1, -1 and infinity:
// Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2;
// 1/2 -1/2 1/2; 0 0 1], Aᵀ = [1 1 1 0; 0 1 -1 -1].

/// `Bᵀ d` of F(2x2, 3x3).
pub(super) struct InputF2;

impl Transform<4, 4> for InputF2 {
    #[inline(always)]
    fn apply<V: Lanes>([d0, d1, d2, d3]: [V; 4]) -> [V; 4] {
        [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
    }
}

/// `G g` of F(2x2, 3x3).
pub(super) struct FilterF2;

impl Transform<3, 4> for FilterF2 {
    #[inline(always)]
    fn apply<V: Lanes>([g0, g1, g2]: [V; 3]) -> [V; 4] {
        let (even, odd) = (g0.add(g2).scale(0.5), g1.scale(0.5));
        [g0, even.add(odd), even.sub(odd), g2]
    }
}

/// `Aᵀ m` of F(2x2, 3x3).
pub(super) struct OutputF2;

impl Transform<4, 2> for OutputF2 {
    #[inline(always)]
    fn apply<V: Lanes>([m0, m1, m2, m3]: [V; 4]) -> [V; 2] {
        [m0.add(m1).add(m2), m1.sub(m2).sub(m3)]
    }
}

/// `Gᵀ u` of F(2x2, 3x3): the kernel gradient from the gradient of its
/// transform.
pub(super) struct FilterGradF2;

impl Transform<4, 3> for FilterGradF2 {
    #[inline(always)]
    fn apply<V: Lanes>([u0, u1, u2, u3]: [V; 4]) -> [V; 3] {
        let (even, odd) = (u1.add(u2).scale(0.5), u1.sub(u2).scale(0.5));
        [u0.add(even), odd, even.add(u3)]
    }
}

/// `A v` of F(2x2, 3x3): the gradient of the products from that of a
/// tile's outputs.
pub(super) struct OutputGradF2;

impl Transform<2, 4> for OutputGradF2 {
    #[inline(always)]
    fn apply<V: Lanes>([v0, v1]: [V; 2]) -> [V; 4] {
        [v0, v0.add(v1), v0.sub(v1), V::zero().sub(v1)]
    }
}

// The transforms of F(4x4, 3x3), interpolating at 0, ±1, ±2 and infinity:
// Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
// 0 2 -1 -2 1 0; 0 4 0 -5 0 1], G = [1/4 0 0; -1/6 -1/6 -1/6;
// -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
// Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].

/// `Bᵀ d` of F(4x4, 3x3), sharing the common terms.
pub(super) struct InputF4;

impl Transform<6, 6> for InputF4 {
    #[inline(always)]
    fn apply<V: Lanes>([d0, d1, d2, d3, d4, d5]: [V; 6]) -> [V; 6] {
        let (a, b) = (d4.sub(d2.scale(4.0)), d3.sub(d1.scale(4.0)));
        let (c, e) = (d4.sub(d2), d3.sub(d1).scale(2.0));
        [
            d0.scale(4.0).sub(d2.scale(5.0)).add(d4),
            a.add(b),
            a.sub(b),
            c.add(e),
            c.sub(e),
            d1.scale(4.0).sub(d3.scale(5.0)).add(d5),
        ]
    }
}

/// `G g` of F(4x4, 3x3).
pub(super) struct FilterF4;

impl Transform<3, 6> for FilterF4 {
    #[inline(always)]
    fn apply<V: Lanes>([g0, g1, g2]: [V; 3]) -> [V; 6] {
        let even = g0.add(g2);
        let (quarter, half) = (
            g0.scale(1.0 / 24.0).add(g2.scale(1.0 / 6.0)),
            g1.scale(1.0 / 12.0),
        );
        [
            g0.scale(0.25),
            even.add(g1).scale(-1.0 / 6.0),
            even.sub(g1).scale(-1.0 / 6.0),
            quarter.add(half),
            quarter.sub(half),
            g2,
        ]
    }
}

/// `Aᵀ m` of F(4x4, 3x3), sharing the common terms.
pub(super) struct OutputF4;

impl Transform<6, 4> for OutputF4 {
    #[inline(always)]
    fn apply<V: Lanes>([m0, m1, m2, m3, m4, m5]: [V; 6]) -> [V; 4] {
        let (s1, d1) = (m1.add(m2), m1.sub(m2));
        let (s2, d2) = (m3.add(m4), m3.sub(m4));
        [
            m0.add(s1).add(s2),
            d1.add(d2.scale(2.0)),
            s1.add(s2.scale(4.0)),
            d1.add(d2.scale(8.0)).add(m5),
        ]
    }
}

/// `Gᵀ u` of F(4x4, 3x3), sharing the common terms.
pub(super) struct FilterGradF4;

impl Transform<6, 3> for FilterGradF4 {
    #[inline(always)]
    fn apply<V: Lanes>([u0, u1, u2, u3, u4, u5]: [V; 6]) -> [V; 3] {
        let (s1, d1) = (u1.add(u2), u2.sub(u1));
        let (s2, d2) = (u3.add(u4), u3.sub(u4));
        [
            u0.scale(0.25)
                .sub(s1.scale(1.0 / 6.0))
                .add(s2.scale(1.0 / 24.0)),
            d1.scale(1.0 / 6.0).add(d2.scale(1.0 / 12.0)),
            s2.sub(s1).scale(1.0 / 6.0).add(u5),
        ]
    }
}

/// `A v` of F(4x4, 3x3), sharing the common terms.
pub(super) struct OutputGradF4;

impl Transform<4, 6> for OutputGradF4 {
    #[inline(always)]
    fn apply<V: Lanes>([v0, v1, v2, v3]: [V; 4]) -> [V; 6] {
        let (s, d) = (v0.add(v2), v1.add(v3));
        let (s4, d8) = (v0.add(v2.scale(4.0)), v1.scale(2.0).add(v3.scale(8.0)));
        [v0, s.add(d), s.sub(d), s4.add(d8), s4.sub(d8), v3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers, so that the transforms' sums are exact in f32 up to
    /// the fractions of `G`.
    fn values(n: usize, seed: usize) -> Vec<One> {
        (0..n)
            .map(|i| One(((i * 7 + seed * 13) % 11) as f32 - 5.0))
            .collect()
    }

    /// `Aᵀ (G g ⊙ Bᵀ d)` is the correlation of `d` with `g`, in 1-D: the
    /// identity both tiles rest on.
    #[test]
    fn one_dimensional_transforms_compute_the_correlation() {
        for seed in 0..20 {
            let g: [One; 3] = values(3, seed).try_into().expect("3 values");
            let d = values(6, seed + 1);
            let correlation = |outputs: usize| -> Vec<f32> {
                (0..outputs)
                    .map(|i| (0..3).map(|k| d[i + k].0 * g[k].0).sum())
                    .collect()
            };
            let multiply = |u: &[One], v: &[One]| -> Vec<One> {
                u.iter().zip(v).map(|(u, v)| One(u.0 * v.0)).collect()
            };
            let f2 = {
                let d: [One; 4] = d[..4].try_into().expect("4 values");
                let product = multiply(&FilterF2::apply(g), &InputF2::apply(d));
                OutputF2::apply(product.try_into().expect("4 values")).map(|y| y.0)
            };
            let f4 = {
                let d: [One; 6] = d[..6].try_into().expect("6 values");
                let product = multiply(&FilterF4::apply(g), &InputF4::apply(d));
                OutputF4::apply(product.try_into().expect("6 values")).map(|y| y.0)
            };
            for (actual, expected) in [(f2.to_vec(), correlation(2)), (f4.to_vec(), correlation(4))]
            {
                for (a, e) in actual.iter().zip(&expected) {
                    assert!(
                        (a - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "{actual:?} vs {expected:?}"
                    );
                }
            }
        }
    }

    /// `<T x, y> = <x, Tᵀ y>`: the gradient transforms are the transposes
    /// of the forward ones.
    #[test]
    fn gradient_transforms_are_the_transposes() {
        fn check<const N: usize, const K: usize>(
            forward: fn([One; N]) -> [One; K],
            transposed: fn([One; K]) -> [One; N],
        ) {
            for seed in 0..20 {
                let x: [One; N] = values(N, seed).try_into().expect("N values");
                let y: [One; K] = values(K, seed + 3).try_into().expect("K values");
                let dot =
                    |a: &[One], b: &[One]| -> f32 { a.iter().zip(b).map(|(a, b)| a.0 * b.0).sum() };
                let (lhs, rhs) = (dot(&forward(x), &y), dot(&x, &transposed(y)));
                assert!(
                    (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
                    "{lhs} vs {rhs}"
                );
            }
        }
        check::<3, 4>(FilterF2::apply, FilterGradF2::apply);
        check::<3, 6>(FilterF4::apply, FilterGradF4::apply);
        check::<4, 2>(OutputF2::apply, OutputGradF2::apply);
        check::<6, 4>(OutputF4::apply, OutputGradF4::apply);
    }

    /// Rows of the 2-D transform are those rows of the whole, and bitwise
    /// the same whichever rows are computed together.
    #[test]
    fn rows_are_the_rows_of_the_whole() {
        let d: [[One; 6]; 6] = std::array::from_fn(|i| values(6, i).try_into().expect("6 values"));
        let whole = transform_2d::<One, InputF4, 6, 6>(d);
        let all = transform_rows::<One, InputF4, 6, 6>(0..6, &d);
        // `whole[j][i]` is row `i`, column `j`.
        for (j, column) in whole.iter().enumerate() {
            for (i, expected) in column.iter().enumerate() {
                let value = all[i][j].0;
                assert!((value - expected.0).abs() <= 1e-4 * value.abs().max(1.0));
            }
        }
        for rows in [0..1, 2..5, 5..6, 1..3] {
            let some = transform_rows::<One, InputF4, 6, 6>(rows.clone(), &d);
            for (i, (row, expected)) in some.iter().zip(&all).enumerate() {
                let bits = row.map(|v| v.0.to_bits());
                if rows.contains(&i) {
                    assert_eq!(bits, expected.map(|v| v.0.to_bits()), "row {i}");
                } else {
                    assert_eq!(bits, [0; 6], "row {i} is not asked for");
                }
            }
        }
    }

    /// The AVX and AVX-512 lanes compute bitwise what one channel at a
    /// time does.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_lanes_match_one_channel_at_a_time() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut checked = 0;
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            let wide = unsafe { avx_transforms(&x) };
            check_lanes(&x, &wide, 8);
            checked += 1;
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            let wide = unsafe { avx512_transforms(&x) };
            check_lanes(&x, &wide, 16);
            checked += 1;
        }
        eprintln!("{checked} vector widths checked");
    }

    /// `wide[block][k][lane]` against the transforms of lane `lane` of the
    /// six rows of `width` values of `x`.
    fn check_lanes(x: &[f32], wide: &[[[f32; 16]; 6]; 2], width: usize) {
        for lane in 0..width {
            let one: [One; 6] = std::array::from_fn(|i| One(x[i * width + lane]));
            let expected = [
                InputF4::apply(one),
                FilterF4::apply([one[0], one[1], one[2]]),
            ];
            for (block, values) in expected.iter().enumerate() {
                for (k, value) in values.iter().enumerate() {
                    assert_eq!(
                        wide[block][k][lane].to_bits(),
                        value.0.to_bits(),
                        "width {width}, lane {lane}"
                    );
                }
            }
        }
    }

    /// `input_f4` and `filter_f4` of six rows of `V::WIDTH` lanes of `x`.
    #[inline(always)]
    fn transforms<V: Lanes>(x: &[f32]) -> [[[f32; 16]; 6]; 2] {
        let mut rows = [V::zero(); 6];
        for (i, row) in rows.iter_mut().enumerate() {
            *row = V::load(&x[i * V::WIDTH..]);
        }
        let mut out = [[[0.0; 16]; 6]; 2];
        for (k, value) in InputF4::apply(rows).into_iter().enumerate() {
            value.store(&mut out[0][k]);
        }
        for (k, value) in FilterF4::apply([rows[0], rows[1], rows[2]])
            .into_iter()
            .enumerate()
        {
            value.store(&mut out[1][k]);
        }
        out
    }

    /// [`transforms`] with AVX.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx_transforms(x: &[f32]) -> [[[f32; 16]; 6]; 2] {
        transforms::<Avx>(x)
    }

    /// [`transforms`] with AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_transforms(x: &[f32]) -> [[[f32; 16]; 6]; 2] {
        transforms::<Avx512>(x)
    }
}
