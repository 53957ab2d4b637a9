//! Output sizes of sliding windows (convolution and pooling), written once.

use super::ShapeError;
use crate::graph::{Op, Padding};

/// The output length of a window of `kernel` taps, dilated by `dilation`,
/// sliding with `stride` over `input` positions, or `None` when the window
/// does not fit (`valid` padding on a too-small input).
///
/// TensorFlow's rules: `same` gives `ceil(input / stride)`; `valid` gives
/// `floor((input - effective_kernel) / stride) + 1`.
pub fn output_size(
    input: u64,
    kernel: u64,
    stride: u64,
    dilation: u64,
    padding: Padding,
) -> Option<u64> {
    let effective = kernel
        .checked_sub(1)?
        .checked_mul(dilation)?
        .checked_add(1)?;
    match padding {
        Padding::Same => Some(input.div_ceil(stride)),
        Padding::Valid if input >= effective => Some((input - effective) / stride + 1),
        Padding::Valid => None,
    }
}

/// The zero padding `same` adds before and after an axis (the odd pixel
/// goes after, as in TensorFlow).
pub fn same_padding(input: u64, kernel: u64, stride: u64, dilation: u64) -> (u64, u64) {
    let effective = (kernel - 1) * dilation + 1;
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + effective).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Applies [`output_size`] to both spatial axes, turning failures into errors.
pub(super) fn apply(
    op: &Op,
    what: &'static str,
    input: [u64; 2],
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    padding: Padding,
) -> Result<(u64, u64), ShapeError> {
    for (value, name) in [(kernel, what), (stride, "stride"), (dilation, "dilation")] {
        if value.contains(&0) {
            return Err(ShapeError::Zero {
                op: op.name().to_string(),
                what: name,
            });
        }
    }
    let axis = |i: usize| output_size(input[i], kernel[i], stride[i], dilation[i], padding);
    match (axis(0), axis(1)) {
        (Some(h), Some(w)) if h > 0 && w > 0 => Ok((h, w)),
        _ => {
            let eff = |i: usize| {
                (kernel[i] - 1)
                    .saturating_mul(dilation[i])
                    .saturating_add(1)
            };
            Err(ShapeError::WindowTooLarge {
                what,
                window: format!("{}x{}", eff(0), eff(1)),
                input_h: input[0],
                input_w: input[1],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_is_ceil_of_input_over_stride() {
        assert_eq!(output_size(28, 3, 1, 1, Padding::Same), Some(28));
        assert_eq!(output_size(7, 3, 2, 1, Padding::Same), Some(4));
        assert_eq!(output_size(1, 3, 2, 1, Padding::Same), Some(1));
    }

    #[test]
    fn valid_shrinks_by_the_effective_kernel() {
        assert_eq!(output_size(28, 5, 1, 1, Padding::Valid), Some(24));
        assert_eq!(output_size(299, 3, 2, 1, Padding::Valid), Some(149));
        assert_eq!(output_size(28, 3, 1, 2, Padding::Valid), Some(24));
        assert_eq!(output_size(4, 5, 1, 1, Padding::Valid), None);
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_last() {
        assert_eq!(same_padding(28, 7, 1, 1), (3, 3));
        assert_eq!(same_padding(28, 3, 2, 1), (0, 1));
        assert_eq!(same_padding(224, 7, 2, 1), (2, 3));
    }
}
