//! Products in bfloat16: `dst = left · right` with both operands rounded
//! to bf16 (round to nearest even) and the products summed in f32. A bf16
//! value is the upper half of an f32 (8 bits of exponent, 8 of
//! precision), so a product of two is exact in f32 and only the sums
//! round. Two backends ([`Backend`]): AMX's tiles (`tdpbf16ps`, 8192
//! multiply-adds an instruction, Intel from Sapphire Rapids on) and
//! AVX512-BF16's vectors (`vdpbf16ps`, two pairs of bf16 multiplied and
//! added to each f32 lane, AMD from Zen 4 on). `cargo bench --bench bf16`
//! measures both against the f32 product (`docs/backend.md`, "bf16").
//!
//! The operands are packed once: the left one ([`Rows`]) as pairs of
//! consecutive values of each row, the right one ([`Panels`]) as panels of
//! [`PANEL`] columns whose rows are pairs of consecutive rows, both padded
//! to whole AMX tiles of 16 pairs. AVX-512's inner loop reads one 32-bit
//! pair of the left operand, broadcast, against four vectors of a panel;
//! AMX reads tiles of 16 rows of 16 pairs from both in place.
//!
//! # Error
//! Rounding an f32 to bf16 changes it by at most `u = 2^-8` of its
//! magnitude, so a product of two rounded values is within `2u + u²` of
//! the exact product, and summing `k` of them in f32 adds at most `k ·
//! 2^-24` of the sum of magnitudes (to first order). For every element,
//! `|dst - exact| <= (2u + u² + k · 2^-24 · (1 + 2u + u²)) · Σ_p
//! |left[i][p]| · |right[p][j]|` ([`error_bound`]): on data of unit scale,
//! about 1% of the sum of magnitudes.

use std::ops::Range;

mod kernels;

pub use kernels::{
    packed_dense_len, packed_dense_transposed_len, packed_transposed_len, packed_weights_len,
    Bf16Forward, PackWeights,
};

/// The columns of one panel of [`Panels`]: four vectors of 16 f32 lanes.
pub const PANEL: usize = VECTORS * LANES;

/// Rows summed at once: 24 accumulators, four vectors of the right operand
/// and a broadcast fit AVX-512's 32 vector registers.
const ROWS: usize = 6;
/// Vectors of 16 columns summed at once.
const VECTORS: usize = 4;
/// Columns per vector.
const LANES: usize = 16;

/// `value` rounded to the nearest bf16, ties to even, as `vcvtne2ps2bf16`
/// rounds: subnormal inputs become zeros of their sign, a NaN stays a
/// (quiet) NaN, and values beyond bf16's largest finite one round to
/// infinity.
pub fn round(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    if value.is_subnormal() {
        return ((bits >> 16) & 0x8000) as u16;
    }
    // Adding just under half a unit of the last kept bit, plus that bit,
    // carries into it exactly when the dropped half is above a half, or a
    // half with the kept bit odd. No finite value carries past infinity's
    // bits (the largest, 0x7f7f_ffff, rounds to infinity, 0x7f80).
    let odd = (bits >> 16) & 1;
    ((bits + 0x7fff + odd) >> 16) as u16
}

/// The f32 whose upper half is `value`.
pub fn widen(value: u16) -> f32 {
    f32::from_bits(u32::from(value) << 16)
}

/// The instructions a bf16 product runs on. Their sums round in different
/// orders, so a program keeps to one (the one [`Backend::best`] chose when
/// it was compiled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AMX tiles (`tdpbf16ps`): Intel from Sapphire Rapids on.
    Amx,
    /// AVX-512 vectors (`vdpbf16ps`): AMD from Zen 4 on, and Intel from
    /// Cooper Lake on.
    Avx512,
}

impl Backend {
    /// Every backend, fastest first.
    pub const ALL: [Backend; 2] = [Backend::Amx, Backend::Avx512];

    /// Whether this CPU (and, for AMX, the kernel) runs this backend.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        match self {
            Backend::Amx => amx::available(),
            Backend::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The fastest backend this machine runs, if any; none when the
    /// environment variable `CNNC_NO_BF16` is set, and not AMX when
    /// `CNNC_NO_AMX` is (to compare, or to see what a CPU without either
    /// instruction set, or with AVX512-BF16 alone, does).
    pub fn best() -> Option<Backend> {
        static BEST: std::sync::OnceLock<Option<Backend>> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            if std::env::var_os("CNNC_NO_BF16").is_some() {
                return None;
            }
            let no_amx = std::env::var_os("CNNC_NO_AMX").is_some();
            Backend::ALL
                .into_iter()
                .filter(|&b| !(no_amx && b == Backend::Amx))
                .find(|b| b.available())
        })
    }

    /// Checks that this CPU runs the backend, for kernel `name`.
    pub fn require(self, name: &str) -> Result<(), crate::codegen::CodegenError> {
        if self.available() {
            return Ok(());
        }
        Err(crate::codegen::CodegenError::UnsupportedHost(format!(
            "kernel `{name}` needs {}, which this CPU does not run",
            self.name()
        )))
    }

    /// What a kernel of `pass` on this backend says it runs, for
    /// profiles ([`crate::codegen::program::Kernel::method`]).
    pub fn method(self, pass: Pass) -> &'static str {
        match (pass, self) {
            (Pass::Forward, Backend::Amx) => "forward, bf16 on AMX",
            (Pass::Forward, Backend::Avx512) => "forward, bf16 on AVX512-BF16",
            (Pass::BackwardData, Backend::Amx) => "backward-data, bf16 on AMX",
            (Pass::BackwardData, Backend::Avx512) => "backward-data, bf16 on AVX512-BF16",
            (Pass::BackwardFilter, Backend::Amx) => "backward-filter, bf16 on AMX",
            (Pass::BackwardFilter, Backend::Avx512) => "backward-filter, bf16 on AVX512-BF16",
        }
    }

    /// The name of the backend's product, for profiles and errors.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Amx => "AMX-BF16",
            Backend::Avx512 => "AVX512-BF16",
        }
    }
}

/// The contraction a bf16 kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The forward product.
    Forward,
    /// The input gradient.
    BackwardData,
    /// The kernel gradient.
    BackwardFilter,
}

/// The bound above on `|dst - exact|` for an element whose inner
/// dimension is `depth` and whose sum of magnitudes `Σ_p |left[i][p]| ·
/// |right[p][j]|` is `magnitude`.
pub fn error_bound(depth: usize, magnitude: f64) -> f64 {
    let u = 2f64.powi(-8);
    let products = 2.0 * u + u * u;
    let sums = depth as f64 * 2f64.powi(-24) * (1.0 + products);
    (products + sums) * magnitude
}

/// Two bf16 values in one word: `low` in the lower half, as `vdpbf16ps`
/// pairs them.
fn pair(low: f32, high: f32) -> u32 {
    u32::from(round(low)) | (u32::from(round(high)) << 16)
}

/// A left operand of `rows` rows of `depth` values, in bf16: row `i` is
/// [`padded_pairs`]`(depth)` words from word `i` times that, word `q`
/// holding values `2q` (low half) and `2q + 1` (high half), zero past the
/// depth. `W` holds the words: a vector of its own ([`Rows::pack`]), or a
/// caller's buffer ([`Rows::new`], a kernel's scratch).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows<W = Vec<u32>> {
    words: W,
    rows: usize,
    depth: usize,
}

/// The words a packed row or panel holds for `depth` values: their pairs,
/// padded with zeros to whole tiles of [`TILE_PAIRS`] (AMX reads a tile's
/// 16 pairs of a row at once; the AVX-512 product stops at the last pair).
pub fn padded_pairs(depth: usize) -> usize {
    depth.div_ceil(2).div_ceil(TILE_PAIRS) * TILE_PAIRS
}

/// The words of the packed right operand of `depth` rows of `columns`
/// values ([`Panels`]).
pub fn panels_words(depth: usize, columns: usize) -> usize {
    columns.div_ceil(PANEL) * padded_pairs(depth) * PANEL
}

/// `floats` as the words of packed operands (a kernel's scratch, or a
/// buffer the memory planner placed as f32s).
pub fn words_mut(floats: &mut [f32]) -> &mut [u32] {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit
    // pattern is valid for both.
    unsafe { std::slice::from_raw_parts_mut(floats.as_mut_ptr().cast(), floats.len()) }
}

/// The halves of `words` as bf16 values: value `2q` in the low half of
/// word `q`, `2q + 1` in its high half (little-endian memory order).
pub fn halves_mut(words: &mut [u32]) -> &mut [u16] {
    // SAFETY: two u16s fill a u32 exactly, u32's alignment satisfies
    // u16's, and every bit pattern is valid for both.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), 2 * words.len()) }
}

/// The values a packer reads: f32s, rounded as they are packed, or bf16
/// values (their bits), copied.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bf16 values.
    Bf16(&'a [u16]),
}

impl Source<'_> {
    fn len(self) -> usize {
        match self {
            Source::F32(values) => values.len(),
            Source::Bf16(values) => values.len(),
        }
    }

    /// Value `i`, packed (rounded, if it is an f32).
    fn bf16(self, i: usize) -> u16 {
        match self {
            Source::F32(values) => round(values[i]),
            Source::Bf16(values) => values[i],
        }
    }
}

/// Pairs in a row of one AMX tile: 64 bytes.
const TILE_PAIRS: usize = 16;

/// Packs f32 values into bf16 operands, in vectors where the CPU converts
/// (`vcvtne2ps2bf16`, which rounds as [`round`] does, and AVX-512 BW's
/// 16-bit lanes), each value once; one value at a time otherwise. It asks
/// the CPU once, when made.
#[derive(Debug, Clone, Copy)]
pub struct Packer {
    vectors: bool,
}

impl Default for Packer {
    fn default() -> Packer {
        Packer::new()
    }
}

impl Packer {
    /// A packer for this CPU.
    pub fn new() -> Packer {
        #[cfg(target_arch = "x86_64")]
        let vectors = std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        #[cfg(not(target_arch = "x86_64"))]
        let vectors = false;
        Packer { vectors }
    }

    /// Packs `row` into `packed`, one row of a [`Rows`]: every word of
    /// `packed` is written, zeros past the row.
    ///
    /// # Panics
    /// When `packed` does not hold [`padded_pairs`]`(row.len())` words.
    pub fn row(self, row: &[f32], packed: &mut [u32]) {
        assert_eq!(packed.len(), padded_pairs(row.len()), "a packed row");
        let pairs = row.len().div_ceil(2);
        #[cfg(target_arch = "x86_64")]
        if self.vectors {
            // SAFETY: the CPU converts (asked when the packer was made);
            // `packed` holds the row's pairs padded to whole tiles of 32
            // values, which covers the last vector of 32.
            unsafe { avx512::pack_row(row, packed) };
            packed[pairs.next_multiple_of(LANES)..].fill(0);
            return;
        }
        for (q, word) in packed.iter_mut().enumerate() {
            *word = if q < pairs {
                let high = row.get(2 * q + 1).copied().unwrap_or(0.0);
                pair(row[2 * q], high)
            } else {
                0
            };
        }
    }

    /// Rounds `values` to bf16 into `out`, one to one (an activation
    /// stored in bf16): as [`round`] rounds, in vectors of 32 where the CPU
    /// converts.
    ///
    /// # Panics
    /// When `out` and `values` differ in length.
    pub fn round(self, values: &[f32], out: &mut [u16]) {
        assert_eq!(values.len(), out.len(), "values and their bf16 copies");
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if self.vectors {
            done = values.len() / (2 * LANES) * (2 * LANES);
            // SAFETY: the CPU converts (asked when the packer was made);
            // both hold `done` values.
            unsafe { avx512::round_values(&values[..done], &mut out[..done]) };
        }
        for (o, &v) in out[done..].iter_mut().zip(&values[done..]) {
            *o = round(v);
        }
    }

    /// Packs panel `panel` of a [`Panels`] of `depth` rows into `packed`:
    /// row `p` of the right operand is `line(p)`, every row as long (the
    /// operand's columns); every word of `packed` is written, zeros past
    /// the rows and the columns.
    ///
    /// # Panics
    /// When `packed` does not hold [`padded_pairs`]`(depth)` lines of
    /// [`PANEL`] words.
    pub fn panel<'v>(
        self,
        depth: usize,
        panel: usize,
        line: impl Fn(usize) -> &'v [f32],
        packed: &mut [u32],
    ) {
        self.panels(depth, panel..panel + 1, line, packed);
    }

    /// [`Packer::panel`] for each of panels `panels`, into `packed`, which
    /// holds them in order. Each pair of rows is read once, across all of
    /// the panels, front to back (rather than each panel's columns down
    /// every row, a walk the hardware prefetches badly).
    ///
    /// # Panics
    /// When `packed` does not hold the panels' padded lines.
    pub fn panels<'v>(
        self,
        depth: usize,
        panels: Range<usize>,
        line: impl Fn(usize) -> &'v [f32],
        packed: &mut [u32],
    ) {
        let lines = padded_pairs(depth);
        let panel_len = lines * PANEL;
        assert_eq!(packed.len(), panels.len() * panel_len, "packed panels");
        let pairs = depth.div_ceil(2);
        for q in 0..lines {
            let words = |k: usize| k * panel_len + q * PANEL..k * panel_len + (q + 1) * PANEL;
            if q >= pairs {
                for k in 0..panels.len() {
                    packed[words(k)].fill(0);
                }
                continue;
            }
            let low = line(2 * q);
            let high = (2 * q + 1 < depth).then(|| line(2 * q + 1));
            #[cfg(target_arch = "x86_64")]
            if self.vectors {
                for (k, panel) in panels.clone().enumerate() {
                    // SAFETY: the CPU converts (asked when the packer was
                    // made); the line holds PANEL words, and the rows are
                    // read at columns `panel * PANEL..` up to their length.
                    unsafe { avx512::pack_line(low, high, panel * PANEL, &mut packed[words(k)]) };
                }
                continue;
            }
            let at = |row: &[f32], col: usize| row.get(col).copied().unwrap_or(0.0);
            for (k, panel) in panels.clone().enumerate() {
                for (c, word) in packed[words(k)].iter_mut().enumerate() {
                    let col = panel * PANEL + c;
                    *word = pair(at(low, col), high.map_or(0.0, |high| at(high, col)));
                }
            }
        }
    }
}

impl Packer {
    /// Packs columns `columns` of the `rows` rows of `source` (row `r` at
    /// `r * stride`) as the rows of a left operand: `packed` holds one
    /// packed row of [`padded_pairs`]`(rows)` words per column, word `q`
    /// of column `c` holding rows `2q` (low half) and `2q + 1` (high half)
    /// of that column, zeros past the rows. This is the transpose of
    /// [`Packer::panel`]'s layout: the left operand of a product summed
    /// over `source`'s rows (a kernel gradient).
    ///
    /// # Panics
    /// When `source` does not hold the rows' columns, or `packed` the
    /// packed columns.
    pub fn columns(
        self,
        source: Source,
        (rows, stride): (usize, usize),
        columns: Range<usize>,
        packed: &mut [u32],
    ) {
        let words = padded_pairs(rows);
        assert!(
            columns.end <= stride || rows == 0,
            "columns {columns:?} of rows of {stride}"
        );
        assert!(
            rows == 0 || source.len() >= (rows - 1) * stride + columns.end,
            "the source rows"
        );
        assert!(packed.len() >= columns.len() * words, "the packed columns");
        #[cfg(target_arch = "x86_64")]
        if self.vectors {
            // SAFETY: the CPU converts (asked when the packer was made);
            // the sizes were asserted.
            unsafe { avx512::pack_columns(source, (rows, stride), columns, packed) };
            return;
        }
        let at = |row: usize, col: usize| {
            if row < rows {
                u32::from(source.bf16(row * stride + col))
            } else {
                0
            }
        };
        for (c, col) in columns.enumerate() {
            for (q, word) in packed[c * words..][..words].iter_mut().enumerate() {
                *word = at(2 * q, col) | at(2 * q + 1, col) << 16;
            }
        }
    }

    /// Packs panel `panel` of a [`Panels`] whose columns are given as
    /// rows: column `c` of the operand is `line(c)`, `depth` values, for
    /// the operand's `columns` columns; every word of `packed` is
    /// written, zeros past the depth and the columns. Word `(q, c)` is
    /// then word `q` of `line(c)` packed as [`Packer::row`] packs it: the
    /// transpose of a [`Rows`] (a weight matrix read as `dy · Wᵀ` reads
    /// it).
    ///
    /// # Panics
    /// When a line does not hold `depth` values, or `packed` does not hold
    /// [`padded_pairs`]`(depth)` lines of [`PANEL`] words.
    pub fn transposed_panel<'v>(
        self,
        (depth, columns): (usize, usize),
        panel: usize,
        line: impl Fn(usize) -> &'v [f32],
        packed: &mut [u32],
    ) {
        let lines = padded_pairs(depth);
        assert_eq!(packed.len(), lines * PANEL, "a packed panel");
        let first = panel * PANEL;
        let count = columns.saturating_sub(first).min(PANEL);
        #[cfg(target_arch = "x86_64")]
        if self.vectors {
            for c in 0..count {
                assert!(
                    line(first + c).len() >= depth,
                    "column {} of {depth}",
                    first + c
                );
            }
            // SAFETY: the CPU converts (asked when the packer was made);
            // the sizes were asserted.
            unsafe { avx512::pack_transposed_panel(depth, |c| line(first + c), count, packed) };
            return;
        }
        let mut row = vec![0u32; lines];
        for c in 0..PANEL {
            if c < count {
                self.row(&line(first + c)[..depth], &mut row);
            } else {
                row.fill(0);
            }
            for (q, &word) in row.iter().enumerate() {
                packed[q * PANEL + c] = word;
            }
        }
    }

    /// The packer that packs one value at a time, for tests of the
    /// vector one.
    pub fn scalar() -> Packer {
        Packer { vectors: false }
    }
}

impl Rows {
    /// Packs the row-major `rows x depth` matrix `values`.
    ///
    /// # Panics
    /// When `values` does not hold `rows * depth` values.
    pub fn pack(values: &[f32], rows: usize, depth: usize) -> Rows {
        assert_eq!(values.len(), rows * depth, "a {rows}x{depth} left operand");
        let stride = padded_pairs(depth);
        let mut words = vec![0u32; rows * stride];
        let packer = Packer::new();
        for (row, packed) in values.chunks(depth.max(1)).zip(words.chunks_mut(stride)) {
            packer.row(row, packed);
        }
        Rows { words, rows, depth }
    }
}

impl<'a> Rows<&'a [u32]> {
    /// The packed operand of `rows` rows of `depth` values in `words`,
    /// each row packed by [`Packer::row`].
    ///
    /// # Panics
    /// When `words` does not hold `rows` packed rows.
    pub fn new(words: &'a [u32], rows: usize, depth: usize) -> Rows<&'a [u32]> {
        assert!(
            words.len() >= rows * padded_pairs(depth),
            "{rows} packed rows"
        );
        Rows { words, rows, depth }
    }
}

impl<W: AsRef<[u32]>> Rows<W> {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The values in each row.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Value `(row, p)` as the product reads it.
    pub fn get(&self, row: usize, p: usize) -> f32 {
        let word = self.words.as_ref()[row * padded_pairs(self.depth) + p / 2];
        widen((word >> (16 * (p % 2))) as u16)
    }

    /// The same operand, its words borrowed.
    pub fn view(&self) -> Rows<&[u32]> {
        Rows {
            words: self.words.as_ref(),
            rows: self.rows,
            depth: self.depth,
        }
    }
}

/// A right operand of `depth` rows of `columns` values, in bf16 panels of
/// [`PANEL`] columns (the last one padded with zeros): panel `b` holds
/// `lines = `[`padded_pairs`]`(depth)` lines of [`PANEL`] words from word
/// `b * lines * PANEL`, word `(q, c)` holding rows `2q` (low half) and
/// `2q + 1` (high half) of the panel's column `c`, zero past the depth.
/// `W` holds the words, as for [`Rows`].
#[derive(Debug, Clone, PartialEq)]
pub struct Panels<W = Vec<u32>> {
    words: W,
    depth: usize,
    columns: usize,
}

impl Panels {
    /// Packs the row-major `depth x columns` matrix `values`.
    ///
    /// # Panics
    /// When `values` does not hold `depth * columns` values.
    pub fn pack(values: &[f32], depth: usize, columns: usize) -> Panels {
        assert_eq!(
            values.len(),
            depth * columns,
            "a {depth}x{columns} right operand"
        );
        let mut words = vec![0u32; panels_words(depth, columns)];
        let packer = Packer::new();
        let line = |p: usize| &values[p * columns..][..columns];
        packer.panels(depth, 0..columns.div_ceil(PANEL), line, &mut words);
        Panels {
            words,
            depth,
            columns,
        }
    }
}

impl<'a> Panels<&'a [u32]> {
    /// The packed operand of `depth` rows of `columns` values in `words`,
    /// each panel packed by [`Packer::panel`].
    ///
    /// # Panics
    /// When `words` does not hold [`panels_words`]`(depth, columns)`.
    pub fn new(words: &'a [u32], depth: usize, columns: usize) -> Panels<&'a [u32]> {
        assert!(
            words.len() >= panels_words(depth, columns),
            "{depth}x{columns} packed panels"
        );
        Panels {
            words,
            depth,
            columns,
        }
    }
}

impl<W: AsRef<[u32]>> Panels<W> {
    /// The number of rows.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The number of columns.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Value `(p, col)` as the product reads it.
    pub fn get(&self, p: usize, col: usize) -> f32 {
        let lines = padded_pairs(self.depth);
        let word = self.words.as_ref()[(col / PANEL * lines + p / 2) * PANEL + col % PANEL];
        widen((word >> (16 * (p % 2))) as u16)
    }

    /// The same operand, its words borrowed.
    pub fn view(&self) -> Panels<&[u32]> {
        Panels {
            words: self.words.as_ref(),
            depth: self.depth,
            columns: self.columns,
        }
    }
}

/// `dst = left · right` over rows `rows` of `left`, on `backend`: `dst`
/// holds those rows, row-major, `right.columns()` values each. Each
/// element sums its pairs of products from zero in the backend's order
/// ([`reference`]), whatever the rows asked for, so any split of the rows
/// gives bitwise the same result.
///
/// # Panics
/// When the backend is not [`Backend::available`] (callers choose one
/// that is), when the inner dimensions differ, when `rows` is not within
/// `left`, or when `dst` does not hold those rows.
pub fn product(
    backend: Backend,
    left: &Rows<impl AsRef<[u32]>>,
    right: &Panels<impl AsRef<[u32]>>,
    rows: Range<usize>,
    dst: &mut [f32],
) {
    let (left, right) = (left.view(), right.view());
    assert!(backend.available(), "this CPU has no {}", backend.name());
    assert_eq!(left.depth, right.depth, "inner dimensions");
    assert!(rows.end <= left.rows, "rows {rows:?} of {}", left.rows);
    assert_eq!(dst.len(), rows.len() * right.columns, "the destination");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU runs the backend (asserted); the operands' and the
    // destination's sizes were asserted to match the shape.
    unsafe {
        match backend {
            Backend::Amx => amx::product(&left, &right, rows, dst),
            Backend::Avx512 => avx512::product(&left, &right, rows, dst),
        }
    }
}

/// [`product`] on [`Backend::Avx512`] one element at a time, in the order
/// `vdpbf16ps` sums: each pair's high (odd) product and then its low
/// (even) one, each sum rounded to f32 and flushed to zero when
/// subnormal. The executable statement of what that product computes, for
/// tests. AMX has no such statement: Intel documents the same steps with
/// the low product first, but the hardware rounds its sums within a tile
/// otherwise (neither that order, nor a pair or a tile summed exactly and
/// rounded once, matches it bitwise), so its products are checked against
/// [`error_bound`] and against themselves.
pub fn reference(left: &Rows<impl AsRef<[u32]>>, right: &Panels<impl AsRef<[u32]>>) -> Vec<f32> {
    let flush = |x: f32| if x.is_subnormal() { 0.0 * x } else { x };
    let mut dst = vec![0.0; left.rows * right.columns];
    for (i, row) in dst.chunks_mut(right.columns.max(1)).enumerate() {
        for (j, value) in row.iter_mut().enumerate() {
            let term = |p: usize| {
                if p < left.depth {
                    left.get(i, p) * right.get(p, j)
                } else {
                    0.0
                }
            };
            let mut sum = 0.0f32;
            for q in 0..left.depth.div_ceil(2) {
                sum = flush(sum + term(2 * q + 1));
                sum = flush(sum + term(2 * q));
            }
            *value = sum;
        }
    }
    dst
}

#[cfg(target_arch = "x86_64")]
mod amx;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m256i, __m512, __m512bh, __m512i, __mmask16, _mm256_maskz_loadu_epi16,
        _mm256_setzero_si256, _mm512_castsi256_si512, _mm512_cvtne2ps_pbh, _mm512_dpbf16_ps,
        _mm512_inserti64x4, _mm512_loadu_si512, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_permutexvar_epi16, _mm512_set1_epi32, _mm512_setzero_ps, _mm512_setzero_si512,
        _mm512_shuffle_i32x4, _mm512_storeu_si512, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64,
        _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
    };
    use std::ops::Range;

    use super::{Panels, Rows, LANES, PANEL, ROWS, VECTORS};

    /// The permutation that pairs two converted rows into words: lane 2i
    /// of the result takes lane i of the low row, lane 2i + 1 lane i of
    /// the high row (lanes 16.. after the conversion).
    const INTERLEAVE: [u16; 32] = {
        let mut lanes = [0u16; 32];
        let mut i = 0;
        while i < 16 {
            lanes[2 * i] = i as u16;
            lanes[2 * i + 1] = 16 + i as u16;
            i += 1;
        }
        lanes
    };

    /// What every block of one product shares.
    struct Shape<'a> {
        left: &'a Rows<&'a [u32]>,
        right: &'a Panels<&'a [u32]>,
        /// The pairs summed.
        pairs: usize,
        /// The words of a packed row, and the lines of a panel.
        stride: usize,
        /// The first row of the product, which `dst` starts at.
        first: usize,
        dst: *mut f32,
    }

    /// [`super::product`].
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16; `dst` holds `rows.len()` rows of
    /// `right.columns` values; `rows` lies within `left`, whose depth is
    /// `right`'s.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn product(
        left: &Rows<&[u32]>,
        right: &Panels<&[u32]>,
        rows: Range<usize>,
        dst: &mut [f32],
    ) {
        let shape = Shape {
            left,
            right,
            pairs: left.depth.div_ceil(2),
            stride: super::padded_pairs(left.depth),
            first: rows.start,
            dst: dst.as_mut_ptr(),
        };
        let whole = rows.start + rows.len() / ROWS * ROWS;
        for col in (0..right.columns).step_by(PANEL) {
            let cols = (right.columns - col).min(PANEL);
            // SAFETY: every block lies within the product's rows and
            // columns.
            unsafe {
                for row in (rows.start..whole).step_by(ROWS) {
                    block::<ROWS>(&shape, row, col, cols);
                }
                match rows.end - whole {
                    0 => {}
                    1 => block::<1>(&shape, whole, col, cols),
                    2 => block::<2>(&shape, whole, col, cols),
                    3 => block::<3>(&shape, whole, col, cols),
                    4 => block::<4>(&shape, whole, col, cols),
                    _ => block::<5>(&shape, whole, col, cols),
                }
            }
        }
    }

    /// Rows `row..row + R` by the panel's columns `col..col + cols`,
    /// summed in registers over every pair and stored.
    ///
    /// # Safety
    /// As for [`product`], with the block inside its shape.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn block<const R: usize>(s: &Shape, row: usize, col: usize, cols: usize) {
        let mut acc = [[_mm512_setzero_ps(); VECTORS]; R];
        let left = s.left.words[row * s.stride..].as_ptr();
        let panel = s.right.words[col * s.stride..].as_ptr();
        for q in 0..s.pairs {
            let line = panel.wrapping_add(q * PANEL);
            let mut right = [bf16_pairs(_mm512_setzero_si512()); VECTORS];
            for (v, vector) in right.iter_mut().enumerate() {
                // SAFETY: a panel's line is PANEL words, all packed (the
                // last panel padded with zeros).
                *vector =
                    bf16_pairs(unsafe { _mm512_loadu_si512(line.wrapping_add(v * LANES).cast()) });
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: word q of row `row + r`, within the left operand
                // (the block's rows are the product's).
                let word = unsafe { *left.wrapping_add(r * s.stride + q) };
                let broadcast = bf16_pairs(_mm512_set1_epi32(word as i32));
                for v in 0..VECTORS {
                    acc[v] = _mm512_dpbf16_ps(acc[v], broadcast, right[v]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = s
                .dst
                .wrapping_add((row + r - s.first) * s.right.columns + col);
            for (v, sum) in acc.iter().enumerate() {
                let lanes = cols.saturating_sub(v * LANES).min(LANES);
                if lanes == 0 {
                    break;
                }
                let mask = ((1u32 << lanes) - 1) as __mmask16;
                // SAFETY: the lanes of row `row + r` within the product's
                // columns, which this call alone writes.
                unsafe { _mm512_mask_storeu_ps(out.wrapping_add(v * LANES), mask, *sum) };
            }
        }
    }

    /// Packs `row` into `packed`: value `p` into half `p % 2` of word `p /
    /// 2`, zeros past the row.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16; `packed` holds at least
    /// `row.len()` values rounded up to a multiple of 32.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_row(row: &[f32], packed: &mut [u32]) {
        for (v, start) in (0..row.len()).step_by(2 * LANES).enumerate() {
            let low = load(row, start);
            let high = load(row, start + LANES);
            // In memory order, the 32 bf16 values are the pairs of 16
            // words: the low half of each word is the even value.
            let values: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            debug_assert!(packed.len() >= (v + 1) * LANES);
            // SAFETY: the caller's contract: 16 words from `v * 16`.
            unsafe { _mm512_storeu_si512(packed.as_mut_ptr().add(v * LANES).cast(), values) };
        }
    }

    /// [`super::Packer::round`] on whole vectors: `values` and `out` hold
    /// the same multiple of 32 values.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round_values(values: &[f32], out: &mut [u16]) {
        debug_assert!(values.len() == out.len() && values.len().is_multiple_of(2 * LANES));
        for start in (0..values.len()).step_by(2 * LANES) {
            let low = load(values, start);
            let high = load(values, start + LANES);
            let rounded: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            // SAFETY: values `start .. start + 32` of `out`, inside it.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(start).cast(), rounded) };
        }
    }

    /// Packs one line of a panel: word `c` of `line` holds column `first +
    /// c` of rows `low` (low half) and `high` (high half; zero when there
    /// is none), zero past the rows' length.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16; `line` holds [`PANEL`] words.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_line(
        low: &[f32],
        high: Option<&[f32]>,
        first: usize,
        line: &mut [u32],
    ) {
        // SAFETY: 64 bytes of a constant.
        let interleave = unsafe { _mm512_loadu_si512(INTERLEAVE.as_ptr().cast()) };
        debug_assert!(line.len() >= PANEL);
        for v in 0..VECTORS {
            let start = first + v * LANES;
            let even = load(low, start);
            let odd = high.map_or(_mm512_setzero_ps(), |high| load(high, start));
            let values: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(odd, even));
            let pairs = _mm512_permutexvar_epi16(interleave, values);
            // SAFETY: the caller's contract: words `v * 16 ..` of the line.
            unsafe { _mm512_storeu_si512(line.as_mut_ptr().add(v * LANES).cast(), pairs) };
        }
    }

    /// [`super::Packer::columns`]: blocks of 16 pairs of rows by 16
    /// columns, each pair of rows converted and interleaved into 16 words
    /// (one per column), the 16 x 16 words transposed in registers, and
    /// stored as 16 words of 16 packed columns.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16; the sizes are as
    /// [`super::Packer::columns`] asserts.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_columns(
        source: super::Source,
        (rows, stride): (usize, usize),
        columns: Range<usize>,
        packed: &mut [u32],
    ) {
        let words = super::padded_pairs(rows);
        // SAFETY: 64 bytes of a constant.
        let interleave = unsafe { _mm512_loadu_si512(INTERLEAVE.as_ptr().cast()) };
        // Rows `2q` and `2q + 1` at columns `first..first + count` as 32
        // bf16 values: the even row's 16 in lanes 0..16, the odd row's in
        // lanes 16..32.
        let halves = |q: usize, first: usize, count: usize| -> __m512i {
            let (even, odd) = (2 * q, 2 * q + 1);
            match source {
                super::Source::F32(values) => {
                    let row = |r: usize| {
                        if r < rows {
                            load(&values[r * stride + first..][..count], 0)
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(
                        row(odd),
                        row(even),
                    ))
                }
                super::Source::Bf16(values) => {
                    let row = |r: usize| {
                        if r < rows {
                            load_halves(&values[r * stride + first..][..count])
                        } else {
                            _mm256_setzero_si256()
                        }
                    };
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(row(even)), row(odd))
                }
            }
        };
        for c0 in columns.clone().step_by(LANES) {
            let count = (columns.end - c0).min(LANES);
            for q0 in (0..words).step_by(LANES) {
                let mut block = [_mm512_setzero_si512(); LANES];
                for (i, vector) in block.iter_mut().enumerate() {
                    *vector = _mm512_permutexvar_epi16(interleave, halves(q0 + i, c0, count));
                }
                let columns_of = transpose(block);
                for (j, vector) in columns_of.iter().enumerate().take(count) {
                    let at = (c0 - columns.start + j) * words + q0;
                    debug_assert!(at + LANES <= packed.len());
                    // SAFETY: words `q0..q0 + 16` of packed column `j`,
                    // within its padded row (the caller's contract).
                    unsafe { _mm512_storeu_si512(packed.as_mut_ptr().add(at).cast(), *vector) };
                }
            }
        }
    }

    /// [`super::Packer::transposed_panel`]: blocks of 16 columns by 16
    /// pairs of their values, each column's 32 values converted into 16
    /// words, the 16 x 16 words transposed in registers and stored along
    /// 16 lines of the panel; zeros past the columns.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16; `line(c)` holds `depth` values
    /// for `c < count`, `count <= PANEL`, and `packed` holds the panel's
    /// padded lines.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_transposed_panel<'v>(
        depth: usize,
        line: impl Fn(usize) -> &'v [f32],
        count: usize,
        packed: &mut [u32],
    ) {
        let lines = super::padded_pairs(depth);
        for c0 in (0..PANEL).step_by(LANES) {
            for q0 in (0..lines).step_by(LANES) {
                let mut block = [_mm512_setzero_si512(); LANES];
                for (c, vector) in block.iter_mut().enumerate().take(count.saturating_sub(c0)) {
                    let values = &line(c0 + c)[..depth];
                    let start = 2 * q0;
                    let (low, high) = (load(values, start), load(values, start + LANES));
                    // Word i pairs values 2i (low half) and 2i + 1.
                    *vector =
                        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                }
                for (i, vector) in transpose(block).iter().enumerate() {
                    let at = (q0 + i) * PANEL + c0;
                    debug_assert!(at + LANES <= packed.len());
                    // SAFETY: words `c0..c0 + 16` of line `q0 + i` of the
                    // panel (the caller's contract).
                    unsafe { _mm512_storeu_si512(packed.as_mut_ptr().add(at).cast(), *vector) };
                }
            }
        }
    }

    /// The 16 x 16 transpose of 32-bit lanes: lane `j` of vector `i`
    /// becomes lane `i` of vector `j`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose(r: [__m512i; LANES]) -> [__m512i; LANES] {
        // Pairs of rows, then quads: u[4g + m] holds, in each 128-bit lane
        // L, column 4L + m of rows 4g..4g + 4.
        let mut t = [_mm512_setzero_si512(); LANES];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_si512(); LANES];
        for g in 0..4 {
            u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
        }
        // Column 4L + m gathers lane L of u[m], u[4 + m], u[8 + m] and
        // u[12 + m], in that order.
        let mut out = [_mm512_setzero_si512(); LANES];
        for m in 0..4 {
            let low = _mm512_shuffle_i32x4::<0x44>(u[m], u[4 + m]);
            let high = _mm512_shuffle_i32x4::<0xee>(u[m], u[4 + m]);
            let low2 = _mm512_shuffle_i32x4::<0x44>(u[8 + m], u[12 + m]);
            let high2 = _mm512_shuffle_i32x4::<0xee>(u[8 + m], u[12 + m]);
            out[m] = _mm512_shuffle_i32x4::<0x88>(low, low2);
            out[4 + m] = _mm512_shuffle_i32x4::<0xdd>(low, low2);
            out[8 + m] = _mm512_shuffle_i32x4::<0x88>(high, high2);
            out[12 + m] = _mm512_shuffle_i32x4::<0xdd>(high, high2);
        }
        out
    }

    /// The first 16 of `values` (fewer when it is shorter, zeros after).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    fn load_halves(values: &[u16]) -> __m256i {
        let lanes = values.len().min(LANES);
        let mask = ((1u32 << lanes) - 1) as __mmask16;
        // SAFETY: the mask's lanes lie within `values`.
        unsafe { _mm256_maskz_loadu_epi16(mask, values.as_ptr().cast()) }
    }

    /// Values `start .. start + 16` of `values`, zero past its end.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load(values: &[f32], start: usize) -> __m512 {
        let lanes = values.len().saturating_sub(start).min(LANES);
        let mask = ((1u32 << lanes) - 1) as __mmask16;
        // SAFETY: the mask's lanes lie within `values` (none when `start`
        // is past its end, where the address is not read).
        unsafe { _mm512_maskz_loadu_ps(mask, values.as_ptr().wrapping_add(start)) }
    }

    /// The bits of `v` as 32 bf16 values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    fn bf16_pairs(v: __m512i) -> __m512bh {
        // SAFETY: both are 512 bits of plain data.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(round(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 · 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
        assert_eq!(round(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        // Just above a half rounds up.
        assert_eq!(round(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(round(-1.5), 0xbfc0);
        assert_eq!(round(f32::MAX), 0x7f80, "rounds to infinity");
        assert_eq!(round(f32::INFINITY), 0x7f80);
        assert_eq!(round(f32::NEG_INFINITY), 0xff80);
        assert!(widen(round(f32::NAN)).is_nan());
        assert_eq!(round(-f32::MIN_POSITIVE / 2.0), 0x8000, "subnormals flush");
        assert_eq!(widen(round(3.0)), 3.0);
    }

    /// A deterministic matrix of values of unit scale, some negative.
    fn matrix(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn packing_keeps_every_value_and_pads_with_zeros() {
        let (rows, depth, columns) = (3, 5, 70);
        let a = matrix(rows * depth, 1);
        let b = matrix(depth * columns, 2);
        let left = Rows::pack(&a, rows, depth);
        let right = Panels::pack(&b, depth, columns);
        for i in 0..rows {
            for p in 0..depth {
                assert_eq!(left.get(i, p), widen(round(a[i * depth + p])));
            }
            assert_eq!(left.words[i * 16 + 2] >> 16, 0, "the odd depth's pad");
            assert!(left.words[i * 16 + 3..(i + 1) * 16].iter().all(|&w| w == 0));
        }
        for p in 0..depth {
            for j in 0..columns {
                assert_eq!(right.get(p, j), widen(round(b[p * columns + j])));
            }
        }
        assert_eq!(right.words.len(), 2 * 16 * PANEL, "two panels of a tile");
        // The second panel's columns past the matrix, and every line past
        // the depth's three pairs, are zeros.
        assert!(right.words[16 * PANEL + 6..]
            .iter()
            .step_by(PANEL)
            .all(|&w| w == 0));
        assert!(right.words[3 * PANEL..16 * PANEL].iter().all(|&w| w == 0));
    }

    #[test]
    fn columns_pack_as_the_rows_of_the_transpose() {
        // Odd rows and columns, a stride wider than the columns, blocks of
        // 16 columns and of 32 rows with remainders, columns from the
        // middle of the rows.
        for (rows, stride, columns) in [
            (1, 3, 0..3),
            (37, 40, 5..38),
            (64, 16, 0..16),
            (70, 90, 17..90),
        ] {
            let source = matrix(rows * stride, rows as u32);
            let words = padded_pairs(rows);
            let rounded: Vec<u16> = source.iter().map(|&v| round(v)).collect();
            let mut vector = vec![7u32; columns.len() * words];
            let mut scalar = vec![9u32; columns.len() * words];
            let f32s = Source::F32(&source);
            Packer::new().columns(f32s, (rows, stride), columns.clone(), &mut vector);
            Packer::scalar().columns(f32s, (rows, stride), columns.clone(), &mut scalar);
            assert_eq!(vector, scalar, "{rows} rows, columns {columns:?}");
            // The same values already in bf16 pack to the same words.
            for packer in [Packer::new(), Packer::scalar()] {
                let mut copied = vec![5u32; columns.len() * words];
                let bf16s = Source::Bf16(&rounded);
                packer.columns(bf16s, (rows, stride), columns.clone(), &mut copied);
                assert_eq!(
                    copied, vector,
                    "{rows} rows, columns {columns:?}, {packer:?}"
                );
            }
            let transposed: Vec<f32> = columns
                .clone()
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| source[r * stride + c])
                .collect();
            let expected = Rows::pack(&transposed, columns.len(), rows);
            assert_eq!(vector, expected.words, "{rows} rows, columns {columns:?}");
        }
    }

    #[test]
    fn transposed_panels_pack_as_the_panels_of_the_transpose() {
        // Depths and columns under, at and past a block of 16 and a panel.
        for (depth, columns) in [(1, 1), (37, 20), (64, 64), (70, 130), (512, 16)] {
            let matrix = matrix(columns * depth, depth as u32);
            let line = |c: usize| &matrix[c * depth..][..depth];
            let transposed: Vec<f32> = (0..depth)
                .flat_map(|p| (0..columns).map(move |c| (p, c)))
                .map(|(p, c)| matrix[c * depth + p])
                .collect();
            let expected = Panels::pack(&transposed, depth, columns);
            let panel_len = padded_pairs(depth) * PANEL;
            for packer in [Packer::new(), Packer::scalar()] {
                let mut words = vec![7u32; panels_words(depth, columns)];
                for (panel, packed) in words.chunks_mut(panel_len).enumerate() {
                    packer.transposed_panel((depth, columns), panel, line, packed);
                }
                assert_eq!(words, expected.words, "{depth} x {columns}, {packer:?}");
            }
        }
    }

    #[test]
    fn panels_hold_pairs_of_rows_column_by_column() {
        // Odd depths, columns under, at and past a panel; every range of
        // panels, the vector packer and the scalar one; word `c` of line
        // `q` of panel `b` pairs rows 2q and 2q + 1 at column 64b + c,
        // zeros past the rows and the columns.
        for (depth, columns) in [(1, 1), (37, 20), (64, 64), (71, 200), (130, 129)] {
            let matrix = matrix(depth * columns, (depth * columns) as u32);
            let at = |p: usize, c: usize| {
                if p < depth && c < columns {
                    matrix[p * columns + c]
                } else {
                    0.0
                }
            };
            let lines = padded_pairs(depth);
            let count = columns.div_ceil(PANEL);
            let expected: Vec<u32> = (0..count * lines * PANEL)
                .map(|i| {
                    let (b, q, c) = (i / (lines * PANEL), i / PANEL % lines, i % PANEL);
                    pair(at(2 * q, b * PANEL + c), at(2 * q + 1, b * PANEL + c))
                })
                .collect();
            let line = |p: usize| &matrix[p * columns..][..columns];
            let panel_len = lines * PANEL;
            for packer in [Packer::new(), Packer::scalar()] {
                for start in 0..count {
                    for end in start..=count {
                        let mut words = vec![9u32; (end - start) * panel_len];
                        packer.panels(depth, start..end, line, &mut words);
                        assert_eq!(
                            words,
                            expected[start * panel_len..end * panel_len],
                            "{depth} x {columns}, panels {start}..{end}, {packer:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packing_rounds_every_value_as_round_does() {
        // Ties both ways, values just off a tie, the extremes, infinities,
        // subnormals and NaN, in both operands, at every lane of a vector.
        let special = [
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            -(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 3.0,
            -f32::MIN_POSITIVE / 5.0,
            f32::MIN_POSITIVE,
            f32::NAN,
            -0.0,
            0.1,
        ];
        let (rows, depth, columns) = (5, 37, 83);
        let spread = |len: usize, seed: u32| -> Vec<f32> {
            let noise = matrix(len, seed);
            (0..len)
                .map(|i| {
                    if i % 3 == 0 {
                        special[i % special.len()]
                    } else {
                        noise[i]
                    }
                })
                .collect()
        };
        let a = spread(rows * depth, 5);
        let b = spread(depth * columns, 6);
        let same = |got: f32, value: f32| {
            let want = widen(round(value));
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
        };
        let left = Rows::pack(&a, rows, depth);
        let right = Panels::pack(&b, depth, columns);
        for i in 0..rows {
            for p in 0..depth {
                assert!(same(left.get(i, p), a[i * depth + p]), "left ({i}, {p})");
            }
        }
        for p in 0..depth {
            for j in 0..columns {
                assert!(
                    same(right.get(p, j), b[p * columns + j]),
                    "right ({p}, {j})"
                );
            }
        }
    }

    /// The shapes the products are checked on: odd and even depths, rows
    /// that are and are not whole blocks, columns under, at and past a
    /// panel.
    const SHAPES: [(usize, usize, usize); 10] = [
        (1, 1, 1),
        (7, 3, 17),
        (6, 64, 64),
        (13, 27, 100),
        (32, 288, 128),
        (5, 1, 130),
        (19, 576, 65),
        (33, 33, 33),
        (40, 100, 70),
        (64, 32, 32),
    ];

    /// The backends this machine runs (none: the tests below check
    /// nothing, and say so).
    fn backends() -> Vec<Backend> {
        let found: Vec<Backend> = Backend::ALL.into_iter().filter(|b| b.available()).collect();
        if found.is_empty() {
            eprintln!("this CPU runs no bf16 backend: nothing to check");
        }
        found
    }

    #[test]
    fn products_are_bitwise_their_order_and_within_the_bound() {
        for backend in backends() {
            for (n, &(rows, depth, columns)) in SHAPES.iter().enumerate() {
                let a = matrix(rows * depth, 3 * n as u32);
                let b = matrix(depth * columns, 3 * n as u32 + 1);
                let left = Rows::pack(&a, rows, depth);
                let right = Panels::pack(&b, depth, columns);
                let mut dst = vec![f32::NAN; rows * columns];
                product(backend, &left, &right, 0..rows, &mut dst);
                let shape = format!("{backend:?} {rows}x{depth}x{columns}");
                if backend == Backend::Avx512 {
                    let expected = reference(&left, &right);
                    for (k, (got, want)) in dst.iter().zip(&expected).enumerate() {
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{shape}, element {k}: {got} against {want}"
                        );
                    }
                }
                within_the_bound(&shape, (&a, &b), (rows, depth, columns), &dst);
            }
        }
    }

    /// Checks every element of `dst = a · b` against [`error_bound`].
    fn within_the_bound(
        shape: &str,
        (a, b): (&[f32], &[f32]),
        (rows, depth, columns): (usize, usize, usize),
        dst: &[f32],
    ) {
        for i in 0..rows {
            for j in 0..columns {
                let terms = (0..depth)
                    .map(|p| (f64::from(a[i * depth + p]), f64::from(b[p * columns + j])));
                let (exact, magnitude) =
                    terms.fold((0.0, 0.0), |(s, m), (x, y)| (s + x * y, m + (x * y).abs()));
                let error = (f64::from(dst[i * columns + j]) - exact).abs();
                assert!(
                    error <= error_bound(depth, magnitude),
                    "{shape} ({i}, {j}): off by {error}, sum of magnitudes {magnitude}"
                );
            }
        }
    }

    #[test]
    fn any_split_of_the_rows_gives_the_same_bits() {
        let (rows, depth, columns) = (71, 45, 90);
        let left = Rows::pack(&matrix(rows * depth, 7), rows, depth);
        let right = Panels::pack(&matrix(depth * columns, 8), depth, columns);
        for backend in backends() {
            let mut whole = vec![0.0; rows * columns];
            product(backend, &left, &right, 0..rows, &mut whole);
            for split in [1, 5, 6, 11, 16, 22, 33, 70] {
                let mut parts = vec![0.0; rows * columns];
                let (top, bottom) = parts.split_at_mut(split * columns);
                product(backend, &left, &right, 0..split, top);
                product(backend, &left, &right, split..rows, bottom);
                assert_eq!(
                    whole.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    parts.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{backend:?}, split at {split}"
                );
            }
        }
    }
}
