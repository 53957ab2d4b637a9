//! Output sizes of sliding windows (convolution and pooling), written once.

use super::ShapeError;
use crate::graph::{AxisPadding, Op, Padding};

/// The output length of a window of `kernel` taps, dilated by `dilation`,
/// sliding with `stride` over `input` positions padded by `padding`, or
/// `None` when the window does not fit (or the padded length overflows).
///
/// TensorFlow's rules: `same` gives `ceil(input / stride)`; explicit
/// padding (`valid`: none) gives `floor((padded - effective_kernel) /
/// stride) + 1`, where `padded = before + input + after`. PyTorch's
/// `ceil_mode` rounds that quotient up instead, less one if the last window
/// would then start past the input (in the padding after it).
pub fn output_size(
    input: u64,
    kernel: u64,
    stride: u64,
    dilation: u64,
    padding: AxisPadding,
) -> Option<u64> {
    let effective = kernel
        .checked_sub(1)?
        .checked_mul(dilation)?
        .checked_add(1)?;
    match padding {
        AxisPadding::Same => Some(input.div_ceil(stride)),
        AxisPadding::Explicit {
            before,
            after,
            ceil,
        } => {
            let span = input
                .checked_add(before)?
                .checked_add(after)?
                .checked_sub(effective)?;
            if !ceil {
                return Some(span / stride + 1);
            }
            let output = span.div_ceil(stride) + 1;
            // The last window starts at (output - 1) * stride in the padded
            // axis; it must start before the input's end.
            let starts_inside = (output - 1) * stride < input + before;
            Some(if starts_inside { output } else { output - 1 })
        }
    }
}

/// The output length of a transposed convolution (Keras's
/// `compute_conv_transpose_output_length`): `input * stride`, plus with
/// `valid` padding what the (dilated) kernel reaches beyond the last
/// stride; with an `output_padding`, `(input - 1) * stride + kernel - 2 *
/// pad + output_padding`, `pad` being half the kernel (rounded down) with
/// `same` padding and 0 with `valid`. `None` on overflow or a zero size.
pub fn transposed_output_size(
    input: u64,
    kernel: u64,
    stride: u64,
    dilation: u64,
    padding: Padding,
    output_padding: Option<u64>,
) -> Option<u64> {
    let effective = kernel
        .checked_sub(1)?
        .checked_mul(dilation)?
        .checked_add(1)?;
    let length = match (output_padding, padding) {
        (None, Padding::Valid) => input
            .checked_mul(stride)?
            .checked_add(effective.saturating_sub(stride))?,
        (None, Padding::Same) => input.checked_mul(stride)?,
        // The language gives a transposed convolution `same` or `valid`
        // only, as Keras's `Conv2DTranspose` takes.
        (_, Padding::Explicit { .. }) => return None,
        (Some(extra), padding) => {
            let pad = match padding {
                Padding::Same => effective / 2,
                Padding::Valid | Padding::Explicit { .. } => 0,
            };
            input
                .checked_sub(1)?
                .checked_mul(stride)?
                .checked_add(effective - 2 * pad)?
                .checked_add(extra)?
        }
    };
    (length > 0).then_some(length)
}

/// The zero padding `same` adds before and after an axis (the odd pixel
/// goes after, as in TensorFlow).
pub fn same_padding(input: u64, kernel: u64, stride: u64, dilation: u64) -> (u64, u64) {
    let effective = (kernel - 1) * dilation + 1;
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + effective).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// The most zeros explicit padding may add on one side, so that padded
/// lengths and window positions stay far from overflowing.
pub const MAX_PAD: u64 = i32::MAX as u64;

/// The padding as the language writes it, for messages.
fn padding_name(padding: Padding) -> String {
    match padding {
        Padding::Same => "same".into(),
        Padding::Valid => "valid".into(),
        Padding::Explicit { pads, .. } => format!(
            "[{}, {}, {}, {}]",
            pads[0][0], pads[0][1], pads[1][0], pads[1][1]
        ),
    }
}

/// Checks that explicit padding `pads` suits a pooling window of `size`:
/// each side pads less than the window on its axis, so that every window
/// holds at least one input cell (max pooling has a value to take and the
/// average a cell to divide by).
pub(super) fn check_pool_padding(
    op: &Op,
    size: [u64; 2],
    padding: Padding,
) -> Result<(), ShapeError> {
    let Padding::Explicit { pads, .. } = padding else {
        return Ok(());
    };
    let fits = (0..2).all(|axis| pads[axis].iter().all(|&p| p < size[axis]));
    if fits {
        return Ok(());
    }
    Err(ShapeError::BadPadding {
        op: op.name().to_string(),
        pads: [pads[0][0], pads[0][1], pads[1][0], pads[1][1]],
        reason: format!(
            "each side must pad less than the {}x{} window spans along its axis, \
             or a window could lie on padding only",
            size[0], size[1]
        ),
    })
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
    if let Padding::Explicit { pads, .. } = padding {
        if pads.as_flattened().iter().any(|&p| p > MAX_PAD) {
            return Err(ShapeError::BadPadding {
                op: op.name().to_string(),
                pads: [pads[0][0], pads[0][1], pads[1][0], pads[1][1]],
                reason: format!("at most {MAX_PAD} zeros can be added on a side"),
            });
        }
    }
    let axis = |i: usize| output_size(input[i], kernel[i], stride[i], dilation[i], padding.axis(i));
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
                padding: padding_name(padding),
            })
        }
    }
}

/// The output height and width of a transposed convolution, checked as
/// Keras and TensorFlow check them: an output padding smaller than the
/// stride, no dilation with a stride, and an output size that the
/// convolution it transposes maps back to the input's (TensorFlow's
/// `Conv2DBackpropInput` refuses any other).
pub(super) fn apply_transposed(
    op: &Op,
    input: [u64; 2],
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    (padding, output_padding): (Padding, Option<[u64; 2]>),
) -> Result<(u64, u64), ShapeError> {
    for (value, name) in [
        (kernel, "kernel"),
        (stride, "stride"),
        (dilation, "dilation"),
    ] {
        if value.contains(&0) {
            return Err(ShapeError::Zero {
                op: op.name().to_string(),
                what: name,
            });
        }
    }
    if let Some(extra) = output_padding {
        if extra[0] >= stride[0] || extra[1] >= stride[1] {
            return Err(ShapeError::OutputPadding {
                output_padding: extra,
                stride,
            });
        }
    }
    if stride.iter().any(|&s| s > 1) && dilation.iter().any(|&d| d > 1) {
        return Err(ShapeError::DilatedStride { stride, dilation });
    }
    let axis = |i: usize| -> Result<u64, ShapeError> {
        let extra = output_padding.map(|p| p[i]);
        let output =
            transposed_output_size(input[i], kernel[i], stride[i], dilation[i], padding, extra);
        let back =
            output.and_then(|o| output_size(o, kernel[i], stride[i], dilation[i], padding.axis(i)));
        match (output, back) {
            (Some(o), Some(b)) if b == input[i] => Ok(o),
            _ => Err(ShapeError::TransposedSize {
                axis: ["height", "width"][i],
                input: input[i],
                output: output.unwrap_or(0),
                back: back.unwrap_or(0),
            }),
        }
    };
    Ok((axis(0)?, axis(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_is_ceil_of_input_over_stride() {
        assert_eq!(output_size(28, 3, 1, 1, Padding::Same.axis(0)), Some(28));
        assert_eq!(output_size(7, 3, 2, 1, Padding::Same.axis(0)), Some(4));
        assert_eq!(output_size(1, 3, 2, 1, Padding::Same.axis(0)), Some(1));
    }

    #[test]
    fn valid_shrinks_by_the_effective_kernel() {
        assert_eq!(output_size(28, 5, 1, 1, Padding::Valid.axis(0)), Some(24));
        assert_eq!(output_size(299, 3, 2, 1, Padding::Valid.axis(0)), Some(149));
        assert_eq!(output_size(28, 3, 1, 2, Padding::Valid.axis(0)), Some(24));
        assert_eq!(output_size(4, 5, 1, 1, Padding::Valid.axis(0)), None);
    }

    fn explicit(before: u64, after: u64, ceil: bool) -> AxisPadding {
        AxisPadding::Explicit {
            before,
            after,
            ceil,
        }
    }

    #[test]
    fn explicit_padding_lengthens_the_input() {
        // tf.nn.conv2d: (before + input + after - effective) / stride + 1, rounded down.
        assert_eq!(output_size(5, 3, 1, 1, explicit(1, 2, false)), Some(6));
        assert_eq!(output_size(5, 3, 2, 1, explicit(0, 1, false)), Some(2));
        assert_eq!(output_size(4, 3, 1, 2, explicit(3, 0, false)), Some(3));
        assert_eq!(output_size(1, 1, 1, 1, explicit(2, 3, false)), Some(6));
        assert_eq!(output_size(2, 5, 1, 1, explicit(1, 1, false)), None);
        assert_eq!(output_size(u64::MAX, 1, 1, 1, explicit(1, 0, false)), None);
    }

    #[test]
    fn ceil_mode_rounds_up_unless_the_last_window_starts_past_the_input() {
        // PyTorch's ceil_mode: ceil((padded - size) / stride) + 1...
        assert_eq!(output_size(5, 2, 2, 1, explicit(0, 0, true)), Some(3));
        assert_eq!(output_size(5, 2, 2, 1, explicit(0, 0, false)), Some(2));
        assert_eq!(output_size(28, 3, 2, 1, explicit(0, 0, true)), Some(14));
        // ...the same when the stride divides it...
        assert_eq!(output_size(7, 3, 2, 1, explicit(0, 0, true)), Some(3));
        // ...and less one where the last window would start in the padding
        // after the input: 3 + 1 + 1 padded, window 2, stride 2: ceil(3 / 2)
        // + 1 = 3, but (3 - 1) * 2 = 4 >= 3 + 1.
        assert_eq!(output_size(3, 2, 2, 1, explicit(1, 1, true)), Some(2));
    }

    #[test]
    fn transposed_sizes_follow_keras() {
        // Keras 3.15's Conv2DTranspose on a 4x4 input, as printed by it.
        let size = |k, s, p, extra| transposed_output_size(4, k, s, 1, p, extra);
        assert_eq!(size(3, 2, Padding::Same, None), Some(8));
        assert_eq!(size(3, 2, Padding::Valid, None), Some(9));
        assert_eq!(size(2, 2, Padding::Same, None), Some(8));
        assert_eq!(size(3, 2, Padding::Same, Some(1)), Some(8));
        assert_eq!(size(3, 2, Padding::Valid, Some(1)), Some(10));
        assert_eq!(size(1, 3, Padding::Valid, None), Some(12));
        // An even kernel with `same` and no extra row: (4 - 1) * 2, which
        // a strided convolution maps to 3, not 4 (TensorFlow refuses it).
        assert_eq!(size(4, 2, Padding::Same, Some(0)), Some(6));
        assert_eq!(output_size(6, 4, 2, 1, AxisPadding::Same), Some(3));
        assert_eq!(
            transposed_output_size(1, 2, 2, 1, Padding::Same, Some(0)),
            None
        );
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_last() {
        assert_eq!(same_padding(28, 7, 1, 1), (3, 3));
        assert_eq!(same_padding(28, 3, 2, 1), (0, 1));
        assert_eq!(same_padding(224, 7, 2, 1), (2, 3));
    }
}
