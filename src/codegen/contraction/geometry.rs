//! The index arithmetic of a convolution, written once for every kernel:
//! output sizes and padding, the taps that ever read the image, the blocks
//! of weight rows those taps use, and the im2col / col2im copies.
//!
//! The im2col matrix has one row per output position (`batch * oh * ow`
//! rows, in NHWC order) and one column per *active* tap and input channel:
//! a tap that reads padding for every output position (a 3x3 kernel on a
//! 1x1 image keeps only its centre) is left out, along with its weight rows,
//! since it only ever multiplies zeros.

use std::ops::Range;

use super::ConvShape;
use crate::codegen::axis::Axis;
use crate::codegen::CodegenError;

/// The largest size of any one dimension; products are checked separately.
const MAX_DIMENSION: usize = i32::MAX as usize;

/// A run of im2col columns whose weight rows are contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Group {
    /// The first im2col column.
    pub col: usize,
    /// The weight row of that column.
    pub weight_row: usize,
    /// The number of columns (and weight rows).
    pub len: usize,
}

/// A validated convolution: sizes, padding and active taps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Geometry {
    pub shape: ConvShape,
    pub y: Axis,
    pub x: Axis,
    /// The vertical taps that read the image for some output position
    /// ([`Axis::active_taps`]), in order.
    pub y_taps: Vec<usize>,
    /// The horizontal taps that do, in order.
    pub x_taps: Vec<usize>,
    /// Whether consecutive active horizontal taps read consecutive input
    /// positions, so that one output position's taps along a row are one
    /// contiguous run of the input.
    x_contiguous: bool,
    /// Rows of the im2col matrix: `batch * oh * ow`.
    pub rows: usize,
    /// Columns of the im2col matrix: active taps times input channels.
    pub cols: usize,
    /// A 1x1 stride-1 convolution without padding: the input itself is
    /// the im2col matrix.
    pub pointwise: bool,
    /// The im2col columns in runs of contiguous weight rows.
    pub groups: Vec<Group>,
    /// The weight rows no active tap uses (their gradient is zero).
    pub dead_rows: Vec<Range<usize>>,
    pub input_len: usize,
    pub output_len: usize,
    pub kernel_len: usize,
}

impl Geometry {
    /// Checks `shape` and works out its geometry; `name` names the kernel in errors.
    pub fn new(name: &str, shape: &ConvShape) -> Result<Geometry, CodegenError> {
        let malformed = |message: String| CodegenError::Malformed {
            kernel: name.to_string(),
            message,
        };
        let s = *shape;
        if let Some((what, value)) = dimensions(&s)
            .into_iter()
            .find(|&(_, value)| value == 0 || value > MAX_DIMENSION)
        {
            return Err(malformed(format!(
                "the {what} is {value}; it must be between 1 and {MAX_DIMENSION}"
            )));
        }
        let (Some(y), Some(x)) = (s.axis(0), s.axis(1)) else {
            return Err(malformed(format!(
                "a {}x{} kernel dilated by {:?} does not fit a {}x{} input with `valid` padding",
                s.kernel[0], s.kernel[1], s.dilation, s.height, s.width
            )));
        };
        let product = |factors: &[usize]| {
            factors
                .iter()
                .try_fold(1usize, |acc, &f| acc.checked_mul(f))
                .filter(|&p| p <= isize::MAX as usize / 4)
                .ok_or_else(|| malformed(format!("the buffer sizes of {shape:?} overflow")))
        };
        let input_len = product(&[s.batch, s.height, s.width, s.in_channels])?;
        let output_len = product(&[s.batch, y.output, x.output, s.out_channels])?;
        let kernel_len = product(&[s.kernel[0], s.kernel[1], s.in_channels, s.out_channels])?;
        let rows = product(&[s.batch, y.output, x.output])?;
        let (y_taps, x_taps) = (y.active_taps(), x.active_taps());
        let x_contiguous = x.dilation == 1 && x_taps.windows(2).all(|w| w[1] == w[0] + 1);
        let cols = y_taps.len() * x_taps.len() * s.in_channels;
        // Explicit padding can pad even a 1x1 convolution, whose output is
        // then not its input's rows.
        let pointwise = s.kernel == [1, 1]
            && s.stride == [1, 1]
            && [y.before, x.before] == [0, 0]
            && [y.output, x.output] == [s.height, s.width];
        let (groups, dead_rows) = weight_groups(
            &y_taps,
            &x_taps,
            s.kernel[1],
            s.in_channels,
            kernel_len / s.out_channels,
        );
        Ok(Geometry {
            shape: s,
            y,
            x,
            y_taps,
            x_taps,
            x_contiguous,
            rows,
            cols,
            pointwise,
            groups,
            dead_rows,
            input_len,
            output_len,
            kernel_len,
        })
    }

    /// Share `item` of `items` of the dead taps' weight rows
    /// ([`Self::dead_rows`]), in order: each item gets as many rows as the
    /// next, within one, so that the items that zero their gradient split
    /// the work (a 3x3 layer on 1x1 images has 8 rows of 9 dead).
    pub fn dead_share(&self, item: usize, items: usize) -> Vec<Range<usize>> {
        let total: usize = self.dead_rows.iter().map(|r| r.len()).sum();
        let items = items.max(1);
        let (lo, hi) = (item * total / items, (item + 1) * total / items);
        let mut share = Vec::new();
        let mut before = 0;
        for dead in &self.dead_rows {
            let (start, end) = (
                dead.start + lo.saturating_sub(before).min(dead.len()),
                dead.start + hi.saturating_sub(before).min(dead.len()),
            );
            if start < end {
                share.push(start..end);
            }
            before += dead.len();
        }
        share
    }

    /// `(image, oy, ox)` of im2col row (output position) `row`.
    pub fn position(&self, row: usize) -> (usize, usize, usize) {
        let per_image = self.y.output * self.x.output;
        let within = row % per_image;
        (
            row / per_image,
            within / self.x.output,
            within % self.x.output,
        )
    }

    /// Writes columns `cols` of im2col rows `rows` into `out`, row-major
    /// `[rows.len(), cols.len()]`; `input` is the whole NHWC input, f32s
    /// or bf16 bits (`u16`), which it copies as they are.
    pub fn im2col<T: Copy + Default>(
        &self,
        input: &[T],
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [T],
    ) {
        let width = cols.len();
        if width == 0 {
            return;
        }
        let (mut image, mut oy, mut ox) = self.position(rows.start);
        for dst in out.chunks_exact_mut(width).take(rows.len()) {
            self.im2col_row(input, (image, oy, ox), cols.start, dst);
            // The next output position, without dividing.
            ox += 1;
            if ox == self.x.output {
                ox = 0;
                oy += 1;
                if oy == self.y.output {
                    oy = 0;
                    image += 1;
                }
            }
        }
    }

    /// Whether every tap of the kernel is active and the horizontal taps
    /// read consecutive input positions: then the taps of one kernel row
    /// for consecutive output positions read one input row at a fixed
    /// stride, once that row is padded ([`Self::padded_width`]).
    pub fn dense_taps(&self) -> bool {
        self.x_contiguous
            && self.y_taps.len() == self.shape.kernel[0]
            && self.x_taps.len() == self.shape.kernel[1]
    }

    /// The positions of an input row padded for every output position's
    /// taps: position `p` is input column `p - x.before`.
    pub fn padded_width(&self) -> usize {
        (self.x.output - 1) * self.x.stride + (self.shape.kernel[1] - 1) * self.x.dilation + 1
    }

    /// The im2col row of output position `(image, oy, ox)` from column
    /// `first` on: one run of columns per active tap row, each read from one
    /// row of the image.
    fn im2col_row<T: Copy + Default>(
        &self,
        input: &[T],
        (image, oy, ox): (usize, usize, usize),
        first: usize,
        dst: &mut [T],
    ) {
        let line_len = self.shape.width * self.shape.in_channels;
        let run = self.x_taps.len() * self.shape.in_channels;
        let end = first + dst.len();
        for (ty, &ky) in self
            .y_taps
            .iter()
            .enumerate()
            .take(end.div_ceil(run))
            .skip(first / run)
        {
            let (lo, hi) = ((ty * run).max(first), ((ty + 1) * run).min(end));
            let out = &mut dst[lo - first..hi - first];
            match self.y.source(oy, ky) {
                None => zero_short(out),
                Some(iy) => {
                    let line = &input[(image * self.shape.height + iy) * line_len..][..line_len];
                    self.fill_run(line, ox, lo - ty * run, out);
                }
            }
        }
    }

    /// Columns `offset..offset + out.len()` of the run of one tap row at
    /// output column `ox`, read from `line`, one row of the image.
    fn fill_run<T: Copy + Default>(&self, line: &[T], ox: usize, offset: usize, out: &mut [T]) {
        let c = self.shape.in_channels;
        if self.x_contiguous {
            // The run is one stretch of the image row, clipped by padding.
            let start = (ox * self.x.stride + self.x_taps[0]) as isize - self.x.before as isize;
            copy_clipped(line, start * c as isize + offset as isize, out);
            return;
        }
        let mut column = offset;
        let mut rest = out;
        while !rest.is_empty() {
            let channel = column % c;
            let (chunk, tail) = rest.split_at_mut((c - channel).min(rest.len()));
            match self.x.source(ox, self.x_taps[column / c]) {
                Some(ix) => chunk.copy_from_slice(&line[ix * c + channel..][..chunk.len()]),
                None => chunk.fill(T::default()),
            }
            column += chunk.len();
            rest = tail;
        }
    }

    /// Gathers the input gradient of input rows `input_rows` (counted
    /// over the batch: `image * height + y`) into `out`, which holds
    /// `width * in_channels` f32s per input row, from `dcol`, the im2col
    /// gradient of output rows `first..` (also counted over the batch).
    /// Each input pixel sums its taps in a fixed order.
    pub fn col2im(&self, dcol: &[f32], first: usize, input_rows: Range<usize>, out: &mut [f32]) {
        let c = self.shape.in_channels;
        let (height, ow) = (self.shape.height, self.x.output);
        let mut pixels = out.chunks_exact_mut(c);
        for row in input_rows {
            let (image, y) = (row / height, row % height);
            for x in 0..self.shape.width {
                let Some(pixel) = pixels.next() else { return };
                pixel.fill(0.0);
                for (ty, &ky) in self.y_taps.iter().enumerate() {
                    let Some(oy) = self.y.reader(y, ky) else {
                        continue;
                    };
                    let dcol_row = (image * self.y.output + oy - first) * ow;
                    for (tx, &kx) in self.x_taps.iter().enumerate() {
                        let Some(ox) = self.x.reader(x, kx) else {
                            continue;
                        };
                        let at = (dcol_row + ox) * self.cols + (ty * self.x_taps.len() + tx) * c;
                        add_assign(pixel, &dcol[at..at + c]);
                    }
                }
            }
        }
    }

    /// The output rows whose im2col gradients input rows `input_rows` need,
    /// both counted over the batch (`image * height + y`).
    pub fn readers(&self, input_rows: Range<usize>) -> Range<usize> {
        let (height, oh) = (self.shape.height, self.y.output);
        let (mut lo, mut hi) = (usize::MAX, 0);
        for row in input_rows {
            let (image, y) = (row / height, row % height);
            for &ky in &self.y_taps {
                if let Some(oy) = self.y.reader(y, ky) {
                    lo = lo.min(image * oh + oy);
                    hi = hi.max(image * oh + oy + 1);
                }
            }
        }
        if lo < hi {
            lo..hi
        } else {
            0..0
        }
    }
}

/// Every size of `s`, named for errors.
fn dimensions(s: &ConvShape) -> [(&'static str, usize); 11] {
    [
        ("batch", s.batch),
        ("height", s.height),
        ("width", s.width),
        ("input channels", s.in_channels),
        ("output channels", s.out_channels),
        ("kernel height", s.kernel[0]),
        ("kernel width", s.kernel[1]),
        ("vertical stride", s.stride[0]),
        ("horizontal stride", s.stride[1]),
        ("vertical dilation", s.dilation[0]),
        ("horizontal dilation", s.dilation[1]),
    ]
}

/// Groups the im2col columns of the active taps into runs of contiguous
/// weight rows, and lists the weight rows no active tap uses.
fn weight_groups(
    y_taps: &[usize],
    x_taps: &[usize],
    kernel_width: usize,
    channels: usize,
    weight_rows: usize,
) -> (Vec<Group>, Vec<Range<usize>>) {
    let mut groups: Vec<Group> = Vec::new();
    for &ky in y_taps {
        for &kx in x_taps {
            let weight_row = (ky * kernel_width + kx) * channels;
            match groups.last_mut() {
                Some(g) if g.weight_row + g.len == weight_row => g.len += channels,
                last => {
                    let col = last.map_or(0, |g| g.col + g.len);
                    groups.push(Group {
                        col,
                        weight_row,
                        len: channels,
                    });
                }
            }
        }
    }
    let mut dead = Vec::new();
    let mut next = 0;
    for g in &groups {
        if g.weight_row > next {
            dead.push(next..g.weight_row);
        }
        next = g.weight_row + g.len;
    }
    if next < weight_rows {
        dead.push(next..weight_rows);
    }
    (groups, dead)
}

/// `out[i] = source[start + i]`, zero where that falls outside `source`.
fn copy_clipped<T: Copy + Default>(source: &[T], start: isize, out: &mut [T]) {
    let len = out.len() as isize;
    if start >= 0 && start + len <= source.len() as isize {
        return copy_short(out, &source[start as usize..][..out.len()]);
    }
    let lo = (-start).clamp(0, len) as usize;
    let hi = (source.len() as isize - start).clamp(lo as isize, len) as usize;
    zero_short(&mut out[..lo]);
    if hi > lo {
        let from = (start + lo as isize) as usize;
        copy_short(&mut out[lo..hi], &source[from..from + (hi - lo)]);
    }
    zero_short(&mut out[hi..]);
}

/// `out.copy_from_slice(source)`, without a call to `memcpy` for runs of a
/// few f32s (a 7x7 kernel on one channel copies runs of 7), where the call
/// costs more than the copy: two overlapping fixed-size copies instead.
#[inline]
fn copy_short<T: Copy>(out: &mut [T], source: &[T]) {
    let n = out.len();
    match n {
        0 => {}
        1..=3 => {
            out[0] = source[0];
            out[n / 2] = source[n / 2];
            out[n - 1] = source[n - 1];
        }
        4..=8 => {
            out[..4].copy_from_slice(&source[..4]);
            out[n - 4..].copy_from_slice(&source[n - 4..n]);
        }
        9..=16 => {
            out[..8].copy_from_slice(&source[..8]);
            out[n - 8..].copy_from_slice(&source[n - 8..n]);
        }
        _ => out.copy_from_slice(source),
    }
}

/// `out.fill(zero)`, without a call to `memset` for a few values.
#[inline]
fn zero_short<T: Copy + Default>(out: &mut [T]) {
    let n = out.len();
    let zero = T::default();
    match n {
        0 => {}
        1..=3 => {
            out[0] = zero;
            out[n / 2] = zero;
            out[n - 1] = zero;
        }
        4..=8 => {
            out[..4].copy_from_slice(&[zero; 4]);
            out[n - 4..].copy_from_slice(&[zero; 4]);
        }
        9..=16 => {
            out[..8].copy_from_slice(&[zero; 8]);
            out[n - 8..].copy_from_slice(&[zero; 8]);
        }
        _ => out.fill(zero),
    }
}

/// `acc += x`, element by element.
pub(super) fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Padding;

    #[test]
    fn dead_shares_split_the_dead_rows_in_order_and_evenly() {
        // A 3x3 layer on 1x1 images (every tap but the centre dead), a
        // 5x5 one on 2x2 images, and one with no dead tap.
        for (size, kernel, channels) in [(1, 3, 5), (2, 5, 3), (4, 3, 2)] {
            let shape = ConvShape {
                batch: 2,
                height: size,
                width: size,
                in_channels: channels,
                out_channels: 4,
                kernel: [kernel, kernel],
                stride: [1, 1],
                dilation: [1, 1],
                padding: Padding::Same,
                bias: false,
            };
            let g = Geometry::new("dead", &shape).expect("a valid shape");
            let dead: Vec<usize> = g.dead_rows.iter().flat_map(|r| r.clone()).collect();
            for items in 1..=10 {
                let shares: Vec<Vec<usize>> = (0..items)
                    .map(|item| g.dead_share(item, items).into_iter().flatten().collect())
                    .collect();
                assert_eq!(
                    shares.concat(),
                    dead,
                    "{size}x{size}, {kernel}x{kernel}, {items}"
                );
                let sizes = shares.iter().map(Vec::len);
                let (lo, hi) = (sizes.clone().min(), sizes.max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{shares:?}");
            }
            assert_eq!(
                dead.is_empty(),
                size == 4,
                "{size}x{size}: {:?}",
                g.dead_rows
            );
        }
    }
}
