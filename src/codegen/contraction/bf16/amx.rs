//! The bf16 product on AMX (Intel's Advanced Matrix Extensions, from
//! Sapphire Rapids on): eight tile registers of up to 16 rows of 64 bytes,
//! and `tdpbf16ps`, which adds the product of a 16 x 32 bf16 tile by a
//! 32 x 16 one (stored as 16 rows of 16 pairs) to a 16 x 16 f32 tile:
//! 8192 multiply-adds an instruction.
//!
//! A block of the product is 32 rows by 32 columns, four f32 tiles
//! (`tmm0..tmm3`), summed over the depth a tile of 16 pairs at a time from
//! two tiles of the left operand's rows (`tmm4`, `tmm5`) and two of a
//! panel's columns (`tmm6`, `tmm7`), read in place from [`Rows`] and
//! [`Panels`], whose rows and lines are padded to whole tiles. The rows
//! of the last block, when fewer, are configured as fewer rows of the same
//! tiles, so each element's sum is the same whatever the rows asked for.
//! Rust has no stable AMX intrinsics; the instructions are written in
//! inline assembly, and the compiler uses no tile register of its own.
//!
//! Linux lends a process AMX's 8 KiB of tile state only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); [`available`]
//! asks once.

use std::arch::asm;
use std::ops::Range;
use std::sync::OnceLock;

use super::{Panels, Rows, PANEL, TILE_PAIRS};

/// Rows of a tile, and of half a block.
const TILE_ROWS: usize = 16;
/// Columns of an f32 tile.
const TILE_COLUMNS: usize = 16;
/// Bytes of a tile's row.
const TILE_BYTES: usize = 64;

/// Whether this CPU and kernel run AMX-BF16 for this process (asked of
/// the kernel once).
pub(super) fn available() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| cpu_has_amx_bf16() && request_tile_data())
}

/// CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
fn cpu_has_amx_bf16() -> bool {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every x86-64 CPU this runs on (leaf 0
    // reports the highest, checked first).
    let (highest, edx) = unsafe {
        let highest = std::arch::x86_64::__cpuid(0).eax;
        let edx = if highest >= 7 {
            std::arch::x86_64::__cpuid_count(7, 0).edx
        } else {
            0
        };
        (highest, edx)
    };
    highest >= 7 && edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

/// Asks Linux for the tile data state; false where it refuses (a kernel
/// before 5.16, or one that does not offer AMX).
fn request_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request reads two integers and changes
    // only the process's permission to use the tile state.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// A tile configuration (`ldtilecfg`'s 64 bytes, palette 1).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl Config {
    /// The tiles of a block whose halves have `top` and `bottom` rows
    /// (`bottom` may be zero: then `tmm2`, `tmm3` and `tmm5` stay
    /// unconfigured, and are not used).
    fn block(top: usize, bottom: usize) -> Config {
        let mut config = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        let mut set = |tile: usize, rows: usize| {
            if rows > 0 {
                config.bytes_per_row[tile] = TILE_BYTES as u16;
                config.rows[tile] = rows as u8;
            }
        };
        // Sums: tmm0, tmm1 the top half's two column tiles, tmm2, tmm3
        // the bottom's; tmm4, tmm5 the halves' rows; tmm6, tmm7 the
        // panel's two column tiles, one line a row.
        set(0, top);
        set(1, top);
        set(2, bottom);
        set(3, bottom);
        set(4, top);
        set(5, bottom);
        set(6, TILE_PAIRS);
        set(7, TILE_PAIRS);
        config
    }
}

/// [`super::product`] on AMX.
///
/// # Safety
/// [`available`] is true; `dst` holds `rows.len()` rows of
/// `right.columns` values; `rows` lies within `left`, whose depth is
/// `right`'s.
pub(super) unsafe fn product(
    left: &Rows<&[u32]>,
    right: &Panels<&[u32]>,
    rows: Range<usize>,
    dst: &mut [f32],
) {
    let stride = super::padded_pairs(left.depth);
    let blocks = stride / TILE_PAIRS;
    let mut loaded = None;
    let mut sums = [[0f32; TILE_ROWS * TILE_COLUMNS]; 4];
    for row in rows.clone().step_by(2 * TILE_ROWS) {
        let count = (rows.end - row).min(2 * TILE_ROWS);
        let (top, bottom) = (count.min(TILE_ROWS), count.saturating_sub(TILE_ROWS));
        if loaded != Some((top, bottom)) {
            let config = Config::block(top, bottom);
            // SAFETY: a valid palette-1 configuration.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
            loaded = Some((top, bottom));
        }
        let rows_at = left.words[row * stride..].as_ptr();
        for col in (0..right.columns).step_by(2 * TILE_COLUMNS) {
            // Block `col` lies in panel `col / PANEL`, at its column `col %
            // PANEL` (0 or 32: both of its column tiles lie in the panel,
            // padded with zeros past the matrix).
            let panel = right.words[(col / PANEL) * stride * PANEL + col % PANEL..].as_ptr();
            let columns = (right.columns - col).min(2 * TILE_COLUMNS);
            let out = (row - rows.start) * right.columns + col;
            if columns == 2 * TILE_COLUMNS {
                // Whole tiles: stored in place, rows `right.columns` apart.
                let at = dst[out..].as_mut_ptr();
                let targets = [
                    at,
                    at.wrapping_add(TILE_COLUMNS),
                    at.wrapping_add(TILE_ROWS * right.columns),
                    at.wrapping_add(TILE_ROWS * right.columns + TILE_COLUMNS),
                ];
                // SAFETY: as below; the targets are the block's four tiles
                // of `dst`, `top` and `bottom` rows of 16 values, inside
                // it (the block's rows and columns are the product's).
                unsafe {
                    sum_block(
                        rows_at,
                        panel,
                        (stride, blocks),
                        bottom > 0,
                        (targets, right.columns),
                    );
                }
                continue;
            }
            let targets = sums.each_mut().map(|tile| tile.as_mut_ptr());
            // SAFETY: the tiles read `top` and `bottom` rows of `stride`
            // words from `row`, and `stride` lines of the panel's columns
            // `col % PANEL .. + 32`, all inside the packed operands; the
            // sums are stored to `sums`, four tiles of 16 x 16.
            unsafe {
                sum_block(
                    rows_at,
                    panel,
                    (stride, blocks),
                    bottom > 0,
                    (targets, TILE_COLUMNS),
                );
            }
            for r in 0..count {
                let (half, tile_row) = (r / TILE_ROWS, r % TILE_ROWS);
                for c in 0..columns {
                    let tile = 2 * half + c / TILE_COLUMNS;
                    dst[out + r * right.columns + c] =
                        sums[tile][tile_row * TILE_COLUMNS + c % TILE_COLUMNS];
                }
            }
        }
    }
    // SAFETY: gives the tile state back (the next product configures it
    // again).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// One block's four tiles of sums, from zero over `blocks` tiles of the
/// depth, stored to `targets` (the bottom half's only when `bottom`),
/// rows `row_stride` f32s apart.
///
/// # Safety
/// A configuration from [`Config::block`] is loaded; `rows_at` and
/// `panel` address what [`product`] says; each target holds its tile's
/// configured rows of 16 f32s, `row_stride` apart, and nothing else
/// accesses them during the call.
#[inline]
unsafe fn sum_block(
    rows_at: *const u32,
    panel: *const u32,
    (stride, blocks): (usize, usize),
    bottom: bool,
    (targets, row_stride): ([*mut f32; 4], usize),
) {
    let row_bytes = stride * 4;
    let line_bytes = PANEL * 4;
    let out_bytes = row_stride * 4;
    // SAFETY (every block below): the caller's contract; each load reads
    // its tile's configured rows of 64 bytes at its stride.
    unsafe {
        asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
        if bottom {
            asm!("tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
        for b in 0..blocks {
            let top_rows = rows_at.wrapping_add(b * TILE_PAIRS);
            let lines = panel.wrapping_add(b * TILE_PAIRS * PANEL);
            asm!(
                "tileloadd tmm4, [{a} + {sa} * 1]",
                "tileloadd tmm6, [{b0} + {sb} * 1]",
                "tileloadd tmm7, [{b1} + {sb} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                a = in(reg) top_rows,
                sa = in(reg) row_bytes,
                b0 = in(reg) lines,
                b1 = in(reg) lines.wrapping_add(TILE_COLUMNS),
                sb = in(reg) line_bytes,
                options(nostack, readonly),
            );
            if bottom {
                asm!(
                    "tileloadd tmm5, [{a} + {sa} * 1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a = in(reg) top_rows.wrapping_add(TILE_ROWS * stride),
                    sa = in(reg) row_bytes,
                    options(nostack, readonly),
                );
            }
        }
        asm!(
            "tilestored [{o0} + {so} * 1], tmm0",
            "tilestored [{o1} + {so} * 1], tmm1",
            o0 = in(reg) targets[0],
            o1 = in(reg) targets[1],
            so = in(reg) out_bytes,
            options(nostack),
        );
        if bottom {
            asm!(
                "tilestored [{o2} + {so} * 1], tmm2",
                "tilestored [{o3} + {so} * 1], tmm3",
                o2 = in(reg) targets[2],
                o3 = in(reg) targets[3],
                so = in(reg) out_bytes,
                options(nostack),
            );
        }
    }
}
