//! Kernels written in Rust rather than generated: pure data movement (row
//! copies for concatenation, channel slices and their gradients, and
//! images copied at an offset for zero padding, cropping and their
//! gradients, which `memcpy` does as well as anything) and dropout's random
//! masks.

use std::ops::Range;

use super::program::Kernel;

/// Copies `len` values of every row from one strided layout to another:
/// `to[r * to.0 + to.1 ..][..len] = from[r * from.0 + from.1 ..][..len]`.
/// A concatenation writes each input at its channel offset; its gradient
/// reads each slice back. Buffers: `from`, `to`. Domain: rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRows {
    /// A name for errors and profiles.
    pub name: String,
    /// Rows to copy.
    pub rows: usize,
    /// Values per row.
    pub len: usize,
    /// The source's row stride and offset, in values.
    pub from: (usize, usize),
    /// The destination's row stride and offset, in values.
    pub to: (usize, usize),
}

/// Copies each `[H, W, C]` image of the source into an `[OH, OW, C]` image
/// of the destination, moved down by `offset[0]` rows and right by
/// `offset[1]` columns (negative: up, left), zeros where no source value
/// lands: `to[n, y, x, c] = from[n, y - offset[0], x - offset[1], c]`.
/// Zero padding by `(top, left)` is the offset `(top, left)`; cropping is
/// a negative offset; each one's gradient is the other's copy with the
/// offset negated. Buffers: `from [N, H, W, C]`, `to [N, OH, OW, C]`.
/// Domain: the destination's rows, `N * OH`. Every destination value is
/// written, and only source positions inside the image are read, whatever
/// the offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PadCopy {
    /// A name for errors and profiles.
    pub name: String,
    /// Images.
    pub batch: usize,
    /// The source's height, width and channels.
    pub from: [usize; 3],
    /// The destination's height and width (the channels are the source's).
    pub to: [usize; 2],
    /// Rows down and columns right the image moves.
    pub offset: [i64; 2],
}

impl PadCopy {
    /// The source's length in values.
    pub fn from_len(&self) -> usize {
        self.batch * self.from.iter().product::<usize>()
    }

    /// The destination's length in values.
    pub fn to_len(&self) -> usize {
        self.batch * self.to[0] * self.to[1] * self.from[2]
    }

    /// The destination positions `0..to_len` along an axis that receive a
    /// source position, for a source of `len` positions moved by
    /// `offset`: `lo..hi` with `lo - offset` the first source position.
    fn landing(len: usize, to_len: usize, offset: i64) -> std::ops::Range<usize> {
        let clamp = |v: i128| v.clamp(0, to_len as i128) as usize;
        let offset = i128::from(offset);
        clamp(offset)..clamp(offset + len as i128)
    }
}

/// Writes every row of `to` (`width` values) as zeros with one slice of
/// `from` embedded: `to[r * width ..][..width] = 0`, then
/// `to[r * width + offset ..][..len] = from[r * len ..][..len]`. The gradient
/// of a channel slice (`channels(start, end)`) scatters dY into zeros so.
/// Buffers: `from [rows * len]`, `to [rows * width]`. Domain: rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedRows {
    /// A name for errors and profiles.
    pub name: String,
    /// Rows.
    pub rows: usize,
    /// Values per row of `from`.
    pub len: usize,
    /// Values per row of `to`.
    pub width: usize,
    /// Where `from`'s row starts in `to`'s.
    pub offset: usize,
}

impl EmbedRows {
    /// Checks that the slice lies inside the row.
    pub fn validate(&self) -> Result<(), String> {
        match self.offset.checked_add(self.len) {
            Some(end) if end <= self.width => Ok(()),
            _ => Err(format!(
                "{}: a slice of {} values at {} does not fit rows of {}",
                self.name, self.len, self.offset, self.width
            )),
        }
    }
}

impl Kernel for EmbedRows {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.rows
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        self.validate()?;
        if items.end > self.rows {
            return Err(format!("{}: rows {items:?} of {}", self.name, self.rows));
        }
        for r in items {
            // SAFETY: the caller guarantees `from` holds `rows * len` values
            // and `to` `rows * width`; `validate` keeps the slice in its row.
            unsafe {
                let target = args[1].add(r * self.width);
                std::ptr::write_bytes(target, 0, self.width);
                let source = args[0].add(r * self.len);
                std::ptr::copy_nonoverlapping(source, target.add(self.offset), self.len);
            }
        }
        Ok(())
    }
}

/// Values per work item of [`DropoutMask`]: a fixed block, so that the
/// values do not depend on how the domain is split.
pub const MASK_BLOCK: usize = 4096;

/// Writes dropout's scaled mask: each value is `1 / (1 - rate)` with
/// probability `1 - rate`, else 0, drawn from a counter-based hash of the
/// seed, the step and the value's index, so a run is reproducible bit for
/// bit. Buffers: `step [2]` (the step number's low and high 32 bits, stored
/// as f32 bit patterns), `mask [len]`. Domain: blocks of [`MASK_BLOCK`].
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutMask {
    /// A name for errors and profiles.
    pub name: String,
    /// Values in the mask.
    pub len: usize,
    /// The fraction dropped, in [0, 1).
    pub rate: f32,
    /// The training run's seed combined with the layer's identity.
    pub seed: u64,
}

impl DropoutMask {
    /// The step buffer's contents for step number `step`.
    pub fn step_buffer(step: u64) -> [f32; 2] {
        [
            f32::from_bits(step as u32),
            f32::from_bits((step >> 32) as u32),
        ]
    }
}

impl Kernel for CopyRows {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.rows
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        for r in items {
            // SAFETY: the caller guarantees both buffers hold `rows` rows of
            // their strides, and a row's slice stays inside its row.
            unsafe {
                let source = args[0].add(r * self.from.0 + self.from.1);
                let target = args[1].add(r * self.to.0 + self.to.1);
                std::ptr::copy_nonoverlapping(source, target, self.len);
            }
        }
        Ok(())
    }
}

impl Kernel for PadCopy {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.batch * self.to[0]
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        let [height, width, channels] = self.from;
        let [to_height, to_width] = self.to;
        let rows = Self::landing(height, to_height, self.offset[0]);
        let columns = Self::landing(width, to_width, self.offset[1]);
        // The first source column of the landing columns (0 unless the
        // image moves left).
        let first_column = (columns.start as i128 - i128::from(self.offset[1])).max(0) as usize;
        let (source_row, row) = (width * channels, to_width * channels);
        for item in items {
            let (image, y) = (item / to_height, item % to_height);
            // SAFETY: the caller guarantees the destination holds `to_len`
            // values, of which row `item` is `row` values at `item * row`.
            let target = unsafe { std::slice::from_raw_parts_mut(args[1].add(item * row), row) };
            if !rows.contains(&y) || columns.is_empty() {
                target.fill(0.0);
                continue;
            }
            let source_y = (y as i128 - i128::from(self.offset[0])) as usize;
            let len = columns.len() * channels;
            let at = (image * height + source_y) * source_row + first_column * channels;
            // SAFETY: `source_y < height` (y lands), and the landing
            // columns come from columns `first_column..first_column +
            // columns.len()` of that row, all below `width`; the source
            // holds `from_len` values and is only read.
            let source = unsafe { std::slice::from_raw_parts(args[0].add(at), len) };
            let (before, rest) = target.split_at_mut(columns.start * channels);
            before.fill(0.0);
            rest[..len].copy_from_slice(source);
            rest[len..].fill(0.0);
        }
        Ok(())
    }
}

impl Kernel for DropoutMask {
    fn name(&self) -> &str {
        &self.name
    }
    fn domain(&self) -> usize {
        self.len.div_ceil(MASK_BLOCK)
    }
    unsafe fn run(&self, args: &[*mut f32], items: Range<usize>) -> Result<(), String> {
        // SAFETY: the caller guarantees the step buffer holds 2 values and
        // the mask `len`.
        let (low, high) = unsafe { ((*args[0]).to_bits(), (*args[0].add(1)).to_bits()) };
        let step = u64::from(low) | (u64::from(high) << 32);
        let stream = splitmix(self.seed ^ splitmix(step));
        let keep = 1.0 / (1.0 - self.rate);
        for block in items {
            let range = block * MASK_BLOCK..((block + 1) * MASK_BLOCK).min(self.len);
            for i in range {
                let unit = (splitmix(stream ^ i as u64) >> 40) as f32 / (1u64 << 24) as f32;
                let value = if unit >= self.rate { keep } else { 0.0 };
                // SAFETY: i < len.
                unsafe { *args[1].add(i) = value };
            }
        }
        Ok(())
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kernel: &dyn Kernel, buffers: &mut [Vec<f32>], items: Range<usize>) {
        let args: Vec<*mut f32> = buffers.iter_mut().map(|b| b.as_mut_ptr()).collect();
        // SAFETY: the buffers are sized for the kernels below.
        unsafe { kernel.run(&args, items) }.expect("runs");
    }

    #[test]
    fn embeds_rows_into_zeros() {
        let embed = EmbedRows {
            name: "slice_grad".into(),
            rows: 2,
            len: 2,
            width: 5,
            offset: 1,
        };
        let mut buffers = vec![vec![1.0, 2.0, 3.0, 4.0], vec![9.0; 10]];
        run(&embed, &mut buffers, 0..2);
        assert_eq!(
            buffers[1],
            vec![0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0]
        );
        let outside = EmbedRows { offset: 4, ..embed };
        assert!(outside.validate().is_err());
    }

    #[test]
    fn copies_rows_into_a_channel_slice_and_back() {
        // Two rows of 3 channels into channels 2..5 of rows of 6.
        let into = CopyRows {
            name: "concat".into(),
            rows: 2,
            len: 3,
            from: (3, 0),
            to: (6, 2),
        };
        let mut buffers = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0.0; 12]];
        run(&into, &mut buffers, 0..2);
        assert_eq!(
            buffers[1],
            vec![0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0, 5.0, 6.0, 0.0]
        );
        let back = CopyRows {
            name: "slice".into(),
            rows: 2,
            len: 3,
            from: (6, 2),
            to: (3, 0),
        };
        let mut buffers = vec![buffers[1].clone(), vec![0.0; 6]];
        run(&back, &mut buffers, 0..2);
        assert_eq!(buffers[1], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn a_pad_copy_moves_the_image_and_fills_with_zeros() {
        // One 2x3 image of one channel padded by 1 row above and 2 columns
        // on the left, 1 on the right: a 3x6 image.
        let pad = PadCopy {
            name: "zero_padding".into(),
            batch: 1,
            from: [2, 3, 1],
            to: [3, 6],
            offset: [1, 2],
        };
        let image = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut buffers = vec![image.clone(), vec![f32::NAN; 18]];
        run(&pad, &mut buffers, 0..pad.domain());
        #[rustfmt::skip]
        let padded = vec![
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 1.0, 2.0, 3.0, 0.0,
            0.0, 0.0, 4.0, 5.0, 6.0, 0.0,
        ];
        assert_eq!(buffers[1], padded);
        // Cropping it back is the opposite offset, and gives the image.
        let crop = PadCopy {
            name: "cropping".into(),
            batch: 1,
            from: [3, 6, 1],
            to: [2, 3],
            offset: [-1, -2],
        };
        let mut buffers = vec![padded, vec![f32::NAN; 6]];
        run(&crop, &mut buffers, 0..1);
        run(&crop, &mut buffers, 1..2);
        assert_eq!(buffers[1], image);
    }

    #[test]
    fn a_pad_copy_past_the_destination_writes_only_zeros() {
        // Moved 5 columns right into a 2-column destination: nothing lands.
        let pad = PadCopy {
            name: "far".into(),
            batch: 2,
            from: [1, 2, 2],
            to: [1, 2],
            offset: [0, 5],
        };
        let mut buffers = vec![vec![1.0; 8], vec![f32::NAN; 8]];
        run(&pad, &mut buffers, 0..pad.domain());
        assert_eq!(buffers[1], vec![0.0; 8]);
    }

    #[test]
    fn dropout_masks_keep_the_expected_fraction_reproducibly() {
        let mask = DropoutMask {
            name: "dropout".into(),
            len: 10_000,
            rate: 0.3,
            seed: 42,
        };
        let draw = |step: u64, split: bool| {
            let mut buffers = vec![
                DropoutMask::step_buffer(step).to_vec(),
                vec![f32::NAN; 10_000],
            ];
            if split {
                run(&mask, &mut buffers, 0..1);
                run(&mask, &mut buffers, 1..mask.domain());
            } else {
                run(&mask, &mut buffers, 0..mask.domain());
            }
            buffers.pop().expect("mask")
        };
        let first = draw(7, false);
        assert_eq!(first, draw(7, true), "the split changed the mask");
        assert_ne!(first, draw(8, false), "another step must draw another mask");
        let kept = first.iter().filter(|&&v| v != 0.0).count();
        assert!(
            (6700..7300).contains(&kept),
            "kept {kept} of 10000 at rate 0.3"
        );
        assert!(first
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    }
}
