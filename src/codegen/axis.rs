//! One spatial axis of a sliding window, shared by every kernel that slides
//! one (pooling, LRN and depthwise convolution in [`super::window`], im2col
//! and col2im in [`super::contraction`]): its sizes, TensorFlow's padding,
//! and which input position each tap of each output position reads.

use std::ops::Range;

use crate::graph::AxisPadding;
use crate::ops::{output_size, same_padding, MAX_PAD};

/// One spatial axis of a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Axis {
    /// Input positions.
    pub input: usize,
    /// Output positions.
    pub output: usize,
    /// Taps of the window.
    pub kernel: usize,
    /// Input positions between consecutive outputs.
    pub stride: usize,
    /// Input positions between consecutive taps.
    pub dilation: usize,
    /// Padding before the first input position (`same`: TensorFlow's, the
    /// odd pixel after; or as given). The padding after is implied by
    /// `output`: whatever the last window reaches past the input.
    pub before: usize,
}

/// A run of consecutive output positions whose windows have the same taps
/// inside the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The output positions.
    pub outputs: Range<usize>,
    /// The taps inside the input, the same for each of them.
    pub taps: Range<usize>,
}

impl Axis {
    /// The axis, or `None` if the window does not fit (or sizes overflow,
    /// or the padding before exceeds [`MAX_PAD`]).
    pub fn new(
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        padding: AxisPadding,
    ) -> Option<Axis> {
        let [i, k, s, d] = [input, kernel, stride, dilation].map(|v| v as u64);
        let output = output_size(i, k, s, d, padding).filter(|&o| o > 0)?;
        let before = match padding {
            AxisPadding::Same => same_padding(i, k, s, d).0,
            AxisPadding::Explicit { before, .. } => before,
        };
        if before > MAX_PAD {
            return None;
        }
        Some(Axis {
            input,
            output: usize::try_from(output).ok()?,
            kernel,
            stride,
            dilation,
            before: usize::try_from(before).ok()?,
        })
    }

    /// The input position of tap 0 of output `o` (negative in the padding).
    /// Sizes of at most 2^31 keep this within `i64`.
    pub fn origin(&self, o: usize) -> i64 {
        (o * self.stride) as i64 - self.before as i64
    }

    /// The taps of output `o` that fall inside the input: a contiguous range.
    pub fn taps(&self, o: usize) -> Range<usize> {
        let (first, d, input) = (self.origin(o), self.dilation as i64, self.input as i64);
        // Tap t reads position first + t * d; the first t with a position
        // >= 0, and the first with a position >= input.
        let lo = if first >= 0 { 0 } else { (-first + d - 1) / d };
        let hi = if first >= input {
            0
        } else {
            (input - first + d - 1) / d
        };
        let lo = (lo as usize).min(self.kernel);
        lo..(hi as usize).clamp(lo, self.kernel)
    }

    /// The output positions in runs of equal taps: the border positions,
    /// whose windows reach into the padding, and the interior.
    pub fn segments(&self) -> Vec<Segment> {
        let mut segments: Vec<Segment> = Vec::new();
        for o in 0..self.output {
            let taps = self.taps(o);
            match segments.last_mut() {
                Some(last) if last.taps == taps => last.outputs.end = o + 1,
                _ => segments.push(Segment {
                    outputs: o..o + 1,
                    taps,
                }),
            }
        }
        segments
    }

    /// The taps that read the input for at least one output position, in
    /// order (a tap that only ever reads padding multiplies zeros).
    pub fn active_taps(&self) -> Vec<usize> {
        (0..self.kernel).filter(|&tap| self.active(tap)).collect()
    }

    /// Whether tap `tap` reads the input for some output position: the
    /// first output position whose tap is not in the padding before the
    /// input must exist and not read past its end.
    fn active(&self, tap: usize) -> bool {
        let offset = tap * self.dilation;
        let first = self.before.saturating_sub(offset).div_ceil(self.stride);
        first < self.output && self.source(first, tap).is_some()
    }

    /// The input position that tap `tap` of output position `out` reads, or
    /// `None` when it reads padding.
    pub fn source(&self, out: usize, tap: usize) -> Option<usize> {
        let position = (out * self.stride + tap * self.dilation).checked_sub(self.before)?;
        (position < self.input).then_some(position)
    }

    /// The output position whose tap `tap` reads input position `position`, if any.
    pub fn reader(&self, position: usize, tap: usize) -> Option<usize> {
        let shifted = (position + self.before).checked_sub(tap * self.dilation)?;
        let out = shifted / self.stride;
        (shifted % self.stride == 0 && out < self.output).then_some(out)
    }

    /// The output positions whose windows contain input position `i`, as
    /// `(first output, tap of i in it)` pairs: none for dilated windows.
    #[cfg(test)]
    fn covering(&self, i: usize) -> Vec<(usize, usize)> {
        (0..self.output)
            .filter_map(|o| {
                let offset = i as i64 - self.origin(o);
                let d = self.dilation as i64;
                (offset >= 0 && offset % d == 0 && offset / d < self.kernel as i64)
                    .then_some((o, (offset / d) as usize))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Padding;

    fn explicit(before: u64, after: u64, ceil: bool) -> AxisPadding {
        AxisPadding::Explicit {
            before,
            after,
            ceil,
        }
    }

    #[test]
    fn explicit_padding_places_the_windows() {
        // 4 inputs padded by 3 before and 2 after, a 1-tap window: 9 outputs,
        // the first three and the last two on padding only.
        let axis = Axis::new(4, 1, 1, 1, explicit(3, 2, false)).expect("fits");
        assert_eq!((axis.output, axis.before), (9, 3));
        let inside: Vec<bool> = (0..9).map(|o| !axis.taps(o).is_empty()).collect();
        assert_eq!(
            inside,
            [false, false, false, true, true, true, true, false, false]
        );
        // PyTorch's ceil_mode: 7 inputs padded by 1, window 3, stride 2:
        // floor(6 / 2) + 1 = 4 windows, ceil too; 8 inputs padded by 1 and 1,
        // window 2, stride 3: floor(8 / 3) + 1 = 3, ceil(8 / 3) + 1 = 4, whose
        // last window starts at 9 - 1 = 8, past the input: 3.
        assert_eq!(
            Axis::new(7, 3, 2, 1, explicit(1, 0, true)).map(|a| a.output),
            Some(4)
        );
        assert_eq!(
            Axis::new(8, 2, 3, 1, explicit(1, 1, false)).map(|a| a.output),
            Some(3)
        );
        assert_eq!(
            Axis::new(8, 2, 3, 1, explicit(1, 1, true)).map(|a| a.output),
            Some(3)
        );
        // 6 inputs, window 3, stride 2: floor(3 / 2) + 1 = 2 windows, ceil
        // gives 3, the last starting at 4 and hanging one cell over the end.
        let ceil = Axis::new(6, 3, 2, 1, explicit(0, 0, true)).expect("fits");
        assert_eq!(ceil.output, 3);
        assert_eq!(ceil.taps(2), 0..2);
    }

    #[test]
    fn taps_skip_the_padding() {
        // 5 inputs, window 3, stride 2, same: output 3, padding (1, 1).
        let axis = Axis::new(5, 3, 2, 1, Padding::Same.axis(0)).expect("fits");
        assert_eq!((axis.output, axis.before), (3, 1));
        assert_eq!(axis.taps(0), 1..3);
        assert_eq!(axis.taps(1), 0..3);
        assert_eq!(axis.taps(2), 0..2);
        assert_eq!(
            axis.segments(),
            vec![
                Segment {
                    outputs: 0..1,
                    taps: 1..3
                },
                Segment {
                    outputs: 1..2,
                    taps: 0..3
                },
                Segment {
                    outputs: 2..3,
                    taps: 0..2
                },
            ]
        );
    }

    #[test]
    fn taps_agree_with_covering_positions() {
        for (input, kernel, stride, dilation, padding) in [
            (7, 3, 1, 1, Padding::Same.axis(0)),
            (7, 3, 2, 2, Padding::Same.axis(0)),
            (2, 2, 2, 3, Padding::Same.axis(0)),
            (9, 2, 3, 1, Padding::Valid.axis(0)),
            (6, 5, 1, 2, Padding::Same.axis(0)),
            (5, 3, 2, 1, explicit(2, 1, false)),
            (4, 1, 1, 1, explicit(3, 2, false)),
            (6, 3, 2, 2, explicit(4, 5, false)),
            (7, 3, 2, 1, explicit(1, 0, true)),
            (8, 2, 3, 1, explicit(1, 1, true)),
        ] {
            let axis = Axis::new(input, kernel, stride, dilation, padding).expect("fits");
            for o in 0..axis.output {
                let inside: Vec<usize> = (0..kernel)
                    .filter(|&t| {
                        (0..input as i64).contains(&(axis.origin(o) + (t * dilation) as i64))
                    })
                    .collect();
                assert_eq!(
                    axis.taps(o).collect::<Vec<_>>(),
                    inside,
                    "{axis:?} output {o}"
                );
            }
            let covered: usize = (0..input).map(|i| axis.covering(i).len()).sum();
            let taps: usize = (0..axis.output).map(|o| axis.taps(o).len()).sum();
            assert_eq!(covered, taps, "{axis:?}");
        }
    }

    #[test]
    fn a_dilated_window_can_lie_on_padding() {
        // Input 2, kernel 2 dilated by 3 (span 4), stride 2, same: taps at -1, 2.
        let axis = Axis::new(2, 2, 2, 3, Padding::Same.axis(0)).expect("fits");
        assert!(axis.taps(0).is_empty(), "{:?}", axis.taps(0));
        let segments = axis.segments();
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].outputs, 0..1);
        assert!(segments[0].taps.is_empty());
    }

    #[test]
    fn sources_readers_and_active_taps_agree() {
        for (input, kernel, stride, dilation, padding) in [
            (7, 3, 1, 1, Padding::Same.axis(0)),
            (1, 3, 1, 1, Padding::Same.axis(0)),
            (7, 3, 2, 2, Padding::Same.axis(0)),
            (9, 2, 3, 1, Padding::Valid.axis(0)),
            (4, 1, 1, 1, explicit(3, 2, false)),
            (6, 3, 2, 2, explicit(4, 5, false)),
            (8, 2, 3, 1, explicit(1, 1, true)),
        ] {
            let axis = Axis::new(input, kernel, stride, dilation, padding).expect("fits");
            for o in 0..axis.output {
                for tap in 0..kernel {
                    let inside = axis.taps(o).contains(&tap);
                    let source = axis.source(o, tap);
                    assert_eq!(source.is_some(), inside, "{axis:?} output {o} tap {tap}");
                    if let Some(position) = source {
                        assert_eq!(axis.reader(position, tap), Some(o), "{axis:?}");
                    }
                }
            }
            let active: Vec<usize> = (0..kernel)
                .filter(|&t| (0..axis.output).any(|o| axis.taps(o).contains(&t)))
                .collect();
            assert_eq!(axis.active_taps(), active, "{axis:?}");
        }
        // A 3x3 kernel on a 1x1 image keeps only its centre.
        let point = Axis::new(1, 3, 1, 1, Padding::Same.axis(0)).expect("fits");
        assert_eq!(point.active_taps(), vec![1]);
    }
}
