//! The rules of each primitive op: output shape, weight shapes, cost
//! ([`infer`], [`params`], [`flops`], here) and gradient ([`gradient`], in
//! `grad.rs`, beside them).
//!
//! The rules are laid out by rule, not by op: each is one function whose
//! body is an exhaustive `match` over [`Op`], one short arm per op, so that
//! it reads as a table and a new op does not compile until every rule has
//! an arm for it (no wildcard arms: the lint below checks it). An op's arms
//! are found by searching for its variant (`Op::Lrn`); its other rules sit
//! in the same kind of table elsewhere:
//!
//! - name, arity and rendering: `Op` in `src/graph/op.rs`;
//! - how the language writes it: `layers::written_as` and `layers::expand`
//!   in `src/elaborate/layers.rs`;
//! - its kernel family, forward and backward: `family` in
//!   `src/passes/lower/family.rs`, which the lowering matches on.
//!
//! `docs/adding-an-op.md` walks through them in order. Shapes are per
//! example (the batch dimension is implicit).

#![deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]

mod grad;
mod window;

use thiserror::Error;

use crate::diagnostics::{Diagnostic, Span};
use crate::graph::{Op, Shape};
pub use grad::{gradient, weight_needs, GradInputs, Need, Rule};
pub use window::{output_size, same_padding, transposed_output_size, MAX_PAD};

/// The largest tensor, in elements per example, that cnnc will address
/// (16 GiB of f32).
pub const MAX_ELEMENTS: u64 = 1 << 32;

/// Why an op cannot be applied to its inputs.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ShapeError {
    /// The input has the wrong number of dimensions.
    #[error("`{op}` expects {expected}, but its input has shape {got}")]
    Rank {
        /// The op (or the layer it implements).
        op: String,
        /// What it needs, in words.
        expected: &'static str,
        /// What it got.
        got: Shape,
    },
    /// A window does not fit into its input with `valid` (or too little
    /// explicit) padding.
    #[error("the {what} {window} does not fit into the {input_h}x{input_w} input with padding {padding}: the output would be empty")]
    WindowTooLarge {
        /// `kernel` or `pool size`.
        what: &'static str,
        /// The (dilated) window, e.g. `7x7`.
        window: String,
        /// Input height.
        input_h: u64,
        /// Input width.
        input_w: u64,
        /// The padding, as written: `valid`, `[1, 1, 0, 0]`.
        padding: String,
    },
    /// Explicit padding the op cannot take.
    #[error("`{op}` cannot pad by [{top}, {bottom}, {left}, {right}] (top, bottom, left, right): {reason}", top = .pads[0], bottom = .pads[1], left = .pads[2], right = .pads[3])]
    BadPadding {
        /// The op (or the layer it implements).
        op: String,
        /// `[top, bottom, left, right]`.
        pads: [u64; 4],
        /// Why not, in words.
        reason: String,
    },
    /// Cropping that removes every row or every column.
    #[error("cannot crop [{top}, {bottom}, {left}, {right}] (top, bottom, left, right) from the {input_h}x{input_w} input: that removes {rows} of its {input_h} rows and {columns} of its {input_w} columns", top = .crop[0], bottom = .crop[1], left = .crop[2], right = .crop[3], rows = .crop[0].saturating_add(.crop[1]), columns = .crop[2].saturating_add(.crop[3]))]
    CropTooLarge {
        /// The rows and columns removed: `[top, bottom, left, right]`.
        crop: [i64; 4],
        /// Input height.
        input_h: u64,
        /// Input width.
        input_w: u64,
    },
    /// The operands of an op that combines tensors do not agree.
    #[error("cannot {verb} tensors of shapes {lhs} and {rhs}: {requirement}", verb = .op.verb(), requirement = .op.requirement(.lhs))]
    Mismatch {
        /// The op that combines them.
        op: Combine,
        /// The first operand's shape.
        lhs: Shape,
        /// The shape of the operand that disagrees with it.
        rhs: Shape,
    },
    /// The concatenation axis does not exist.
    #[error("cannot concatenate along axis {axis}: the inputs have rank {rank}")]
    BadAxis {
        /// The axis asked for.
        axis: i64,
        /// The rank of the inputs.
        rank: usize,
    },
    /// An attribute that must divide the channels does not.
    #[error("`depth_maxpool` pools groups of {size} channels, but {channels} channels do not split into such groups")]
    Indivisible {
        /// Group size.
        size: u64,
        /// Input channels.
        channels: u64,
    },
    /// A grouped convolution's channels or filters do not split into its groups.
    #[error("`conv` with groups: {groups} needs input channels and filters that both divide into {groups} groups, but it has {channels} input channels and {filters} filters")]
    Groups {
        /// The groups asked for.
        groups: u64,
        /// Input channels.
        channels: u64,
        /// Output channels.
        filters: u64,
    },
    /// A channel slice outside its input's channels, or empty.
    #[error("`channels({start}, {end})` needs 0 <= start < end <= {channels} (negative indices count from the end), but the input has shape {input}")]
    Slice {
        /// The first channel, as written.
        start: i64,
        /// One past the last, as written.
        end: i64,
        /// The input's channels.
        channels: u64,
        /// The input's shape.
        input: Shape,
    },
    /// An attribute is zero where it must be positive.
    #[error("`{op}` needs a positive {what}, got 0")]
    Zero {
        /// The op (or the layer it implements).
        op: String,
        /// The attribute.
        what: &'static str,
    },
    /// A transposed convolution's output padding is not below its stride.
    #[error("`conv_transpose` needs an output_padding smaller than its stride in each dimension, but output_padding is {} and stride is {}", pair(*.output_padding), pair(*.stride))]
    OutputPadding {
        /// The output padding.
        output_padding: [u64; 2],
        /// The stride.
        stride: [u64; 2],
    },
    /// A transposed convolution with both a stride and a dilation, which
    /// Keras refuses.
    #[error("`conv_transpose` cannot combine a stride of {} with a dilation of {}: one of them must be 1, as in Keras", pair(*.stride), pair(*.dilation))]
    DilatedStride {
        /// The stride.
        stride: [u64; 2],
        /// The dilation.
        dilation: [u64; 2],
    },
    /// A transposed convolution whose output size (by Keras's rule) the
    /// convolution it transposes does not map back to its input's size.
    #[error("`conv_transpose` would make the input's {axis} of {input} an output {axis} of {output} (Keras's rule), but the convolution it transposes maps {output} back to {back}, not {input}")]
    TransposedSize {
        /// `height` or `width`.
        axis: &'static str,
        /// The input's size along it.
        input: u64,
        /// The output's size by Keras's rule.
        output: u64,
        /// What the convolution it transposes makes of that output size.
        back: u64,
    },
    /// A reshape's target does not hold the input's values.
    #[error("cannot reshape {input} ({elements} values) to [{target}]: {reason}")]
    Reshape {
        /// The input's shape.
        input: Shape,
        /// Its number of values.
        elements: u64,
        /// The target as written.
        target: String,
        /// Why not, in words.
        reason: String,
    },
    /// A tensor too large to address.
    #[error("this tensor would have shape {shape}: too large to address (more than {max} elements per example)", max = MAX_ELEMENTS)]
    TooLarge {
        /// The shape, as far as it could be computed.
        shape: String,
    },
    /// A weight too large to address.
    #[error("the weight `{name}` would have shape {shape}: too large to address (more than {max} elements)", max = MAX_ELEMENTS)]
    WeightTooLarge {
        /// The weight's local name (`kernel`).
        name: &'static str,
        /// Its shape.
        shape: Shape,
    },
}

/// An op that combines tensors whose shapes must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// A sum: all shapes equal.
    Add,
    /// A concatenation: all dimensions equal but `axis`.
    Concat {
        /// The axis joined.
        axis: usize,
    },
    /// `x * s`: `s` has the shape of `x` or is one value per channel.
    Multiply,
    /// A loss: the labels have the scores' shape with one label in place
    /// of the last axis.
    Score,
}

impl Combine {
    /// The verb of the error message: "cannot add tensors...".
    fn verb(self) -> &'static str {
        match self {
            Combine::Add => "add",
            Combine::Concat { .. } => "concatenate",
            Combine::Multiply => "multiply",
            Combine::Score => "score",
        }
    }

    /// What must agree, given the first operand `lhs`.
    fn requirement(self, lhs: &Shape) -> String {
        match self {
            Combine::Add => "a sum needs equal shapes".into(),
            Combine::Concat { axis } => format!("all dimensions but axis {axis} must be equal"),
            Combine::Multiply => format!(
                "the right side must have the left side's shape or be a per-channel vector [{}]",
                lhs.channels()
            ),
            Combine::Score => {
                "the labels need the scores' shape with one label in place of the last axis".into()
            }
        }
    }
}

impl ShapeError {
    /// The error as reported for a call of layer `layer`, which the user
    /// wrote and which may differ from the op's name (`conv` is `conv2d`).
    pub fn for_layer(mut self, layer: &str) -> ShapeError {
        if let ShapeError::Rank { op, .. }
        | ShapeError::Zero { op, .. }
        | ShapeError::BadPadding { op, .. } = &mut self
        {
            *op = layer.to_string();
        }
        self
    }

    /// A hint for fixing the error, when there is an obvious one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ShapeError::WindowTooLarge { .. } => {
                Some("help: use `padding: same`, a smaller window, or fewer downsampling layers before this one".into())
            }
            ShapeError::Mismatch { op: Combine::Add, lhs, rhs } if lhs.rank() == 3 && rhs.rank() == 3 => Some(
                "help: a residual shortcut whose shape changes needs a projection, e.g. `conv(filters, 1, stride: 2)` on the skip path"
                    .into(),
            ),
            ShapeError::Rank { expected, .. } if expected.contains("[features]") => {
                Some("help: insert `flatten` or a global pooling layer before it".into())
            }
            ShapeError::Reshape { input, .. } => Some(format!(
                "help: the target must hold {} values (the input's shape is {input}); one dimension may be -1, inferred from the others",
                input.elements()
            )),
            ShapeError::TransposedSize { .. } => Some(
                "help: TensorFlow refuses it too; with `padding: same`, an even kernel needs `output_padding` of at least 1, or `none`"
                    .into(),
            ),
            ShapeError::CropTooLarge { .. } => Some(
                "help: cropping must leave at least one row and one column".into(),
            ),
            ShapeError::Rank { .. }
            | ShapeError::OutputPadding { .. }
            | ShapeError::DilatedStride { .. }
            | ShapeError::BadPadding { .. }
            | ShapeError::Mismatch { .. }
            | ShapeError::BadAxis { .. }
            | ShapeError::Indivisible { .. }
            | ShapeError::Groups { .. }
            | ShapeError::Slice { .. }
            | ShapeError::Zero { .. }
            | ShapeError::TooLarge { .. }
            | ShapeError::WeightTooLarge { .. } => None,
        }
    }

    /// The error as a diagnostic at `span`, labelled `label`, with its hint
    /// as a note: the one place where a shape error becomes text.
    pub fn to_diagnostic(&self, span: Span, label: impl Into<String>) -> Diagnostic {
        let error = Diagnostic::error(span, self.to_string(), label);
        match self.hint() {
            Some(hint) => error.with_note(hint),
            None => error,
        }
    }
}

/// The output shape of `op` applied to inputs of shapes `inputs`.
pub fn infer(op: &Op, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
    let out = match op {
        Op::Input { shape } => Shape(shape.clone()),
        Op::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => {
            nonzero(op, *filters, "number of filters")?;
            nonzero(op, *groups, "number of groups")?;
            let (h, w, c) = image(op, inputs[0])?;
            if !c.is_multiple_of(*groups) || !filters.is_multiple_of(*groups) {
                return Err(ShapeError::Groups {
                    groups: *groups,
                    channels: c,
                    filters: *filters,
                });
            }
            let (oh, ow) =
                window::apply(op, "kernel", [h, w], *kernel, *stride, *dilation, *padding)?;
            Shape(vec![oh, ow, *filters])
        }
        Op::ConvTranspose2d {
            filters,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            ..
        } => {
            nonzero(op, *filters, "number of filters")?;
            let (h, w, _) = image(op, inputs[0])?;
            let (oh, ow) = window::apply_transposed(
                op,
                [h, w],
                *kernel,
                *stride,
                *dilation,
                (*padding, *output_padding),
            )?;
            Shape(vec![oh, ow, *filters])
        }
        Op::Upsample { factor, .. } => {
            nonzero(op, factor[0].min(factor[1]), "factor")?;
            let (h, w, c) = image(op, inputs[0])?;
            let oh = checked_mul(h, factor[0], &[])?;
            let ow = checked_mul(w, factor[1], &[oh])?;
            Shape(vec![oh, ow, c])
        }
        Op::DepthwiseConv2d {
            multiplier,
            kernel,
            stride,
            padding,
            dilation,
            ..
        } => {
            nonzero(op, *multiplier, "depth multiplier")?;
            let (h, w, c) = image(op, inputs[0])?;
            let (oh, ow) =
                window::apply(op, "kernel", [h, w], *kernel, *stride, *dilation, *padding)?;
            Shape(vec![oh, ow, checked_mul(c, *multiplier, &[oh, ow])?])
        }
        Op::Pool2d {
            size,
            stride,
            padding,
            ..
        } => {
            let (h, w, c) = image(op, inputs[0])?;
            window::check_pool_padding(op, *size, *padding)?;
            let (oh, ow) =
                window::apply(op, "pool size", [h, w], *size, *stride, [1, 1], *padding)?;
            Shape(vec![oh, ow, c])
        }
        Op::Dense { units, .. } | Op::Rbf { units } => {
            nonzero(op, *units, "number of units")?;
            vector(op, inputs[0])?;
            let mut dims = inputs[0].0.clone();
            *dims.last_mut().expect("rank checked") = *units;
            Shape(dims)
        }
        Op::Pad { .. } => {
            let (h, w, c) = image(op, inputs[0])?;
            let [oh, ow] = padded(op.pad_amounts(), [h, w])?;
            Shape(vec![oh, ow, c])
        }
        Op::GlobalPool { .. } => Shape(vec![image(op, inputs[0])?.2]),
        Op::DepthMaxPool { size } => {
            nonzero(op, *size, "pool size")?;
            let (h, w, c) = image(op, inputs[0])?;
            if c % size != 0 {
                return Err(ShapeError::Indivisible {
                    size: *size,
                    channels: c,
                });
            }
            Shape(vec![h, w, c / size])
        }
        Op::Flatten => Shape(vec![inputs[0].elements()]),
        Op::Reshape { shape } => reshaped(inputs[0], shape)?,
        Op::ChannelSlice { start, end } => {
            let (first, last) = channel_range(*start, *end, inputs[0])?;
            let mut dims = inputs[0].0.clone();
            *dims.last_mut().expect("channel_range checks the rank") = last - first;
            Shape(dims)
        }
        Op::Lrn { .. } => {
            image(op, inputs[0])?;
            inputs[0].clone()
        }
        Op::Dropout { .. } | Op::BatchNorm { .. } | Op::ScaleBias | Op::Activation(_) => {
            inputs[0].clone()
        }
        Op::Add => add(inputs)?,
        Op::Concat { axis } => concat(inputs, *axis)?,
        Op::Multiply => multiply(inputs[0], inputs[1])?,
        Op::Labels { shape } => Shape(shape.clone()),
        Op::Upstream { shape, .. } => Shape(shape.clone()),
        Op::CrossEntropy { .. } => scored(op, inputs[0], inputs[1])?,
        Op::CrossEntropyGrad { .. } => {
            scored(op, inputs[0], inputs[1])?;
            inputs[0].clone()
        }
        Op::InputGrad {
            slot,
            inputs: shapes,
            ..
        } => Shape(shapes[*slot].clone()),
        Op::WeightGrad { shape, .. } => Shape(shape.clone()),
    };
    checked_elements(&out.0)?;
    // Weights are sized by the op's attributes too (`conv(10^6, 10^6)` on a
    // small image); counting their elements later must not overflow.
    for (name, shape, _) in params(op, inputs) {
        if checked_elements(&shape).is_err() {
            return Err(ShapeError::WeightTooLarge {
                name,
                shape: Shape(shape),
            });
        }
    }
    Ok(out)
}

/// The weights of `op` on inputs of shapes `inputs`: their local names and
/// shapes, in the seed's layouts, and whether they are trainable by nature
/// (batchnorm's moving statistics are not).
pub fn params(op: &Op, inputs: &[&Shape]) -> Vec<(&'static str, Vec<u64>, bool)> {
    let channels = inputs.first().map_or(0, |s| s.channels());
    let bias = |on: bool, n: u64| {
        if on {
            vec![("bias", vec![n], true)]
        } else {
            vec![]
        }
    };
    match op {
        Op::Conv2d {
            filters,
            kernel,
            bias: b,
            groups,
            ..
        } => {
            // Each filter sees its group's `channels / groups` channels
            // (Keras's kernel shape; `infer` checks the division first).
            let per_group = channels / (*groups).max(1);
            let mut p = vec![(
                "kernel",
                vec![kernel[0], kernel[1], per_group, *filters],
                true,
            )];
            p.extend(bias(*b, *filters));
            p
        }
        // Keras's layout: the filters (the output channels) before the
        // input channels, as the kernel of the convolution it transposes.
        Op::ConvTranspose2d {
            filters,
            kernel,
            bias: b,
            ..
        } => {
            let mut p = vec![(
                "kernel",
                vec![kernel[0], kernel[1], *filters, channels],
                true,
            )];
            p.extend(bias(*b, *filters));
            p
        }
        Op::DepthwiseConv2d {
            multiplier,
            kernel,
            bias: b,
            ..
        } => {
            let mut p = vec![(
                "kernel",
                vec![kernel[0], kernel[1], channels, *multiplier],
                true,
            )];
            p.extend(bias(*b, channels * multiplier));
            p
        }
        Op::Dense { units, bias: b } => {
            let mut p = vec![("kernel", vec![channels, *units], true)];
            p.extend(bias(*b, *units));
            p
        }
        Op::Rbf { units } => vec![("centers", vec![channels, *units], true)],
        Op::BatchNorm { center, scale, .. } => {
            let mut p = Vec::new();
            if *scale {
                p.push(("gamma", vec![channels], true));
            }
            if *center {
                p.push(("beta", vec![channels], true));
            }
            p.push(("moving_mean", vec![channels], false));
            p.push(("moving_variance", vec![channels], false));
            p
        }
        Op::ScaleBias => vec![
            ("coefficient", vec![channels], true),
            ("bias", vec![channels], true),
        ],
        Op::Input { .. }
        | Op::Pool2d { .. }
        | Op::Upsample { .. }
        | Op::Pad { .. }
        | Op::GlobalPool { .. }
        | Op::DepthMaxPool { .. }
        | Op::Flatten
        | Op::Reshape { .. }
        | Op::ChannelSlice { .. }
        | Op::Dropout { .. }
        | Op::Lrn { .. }
        | Op::Activation(_)
        | Op::Add
        | Op::Concat { .. }
        | Op::Multiply
        | Op::Labels { .. }
        | Op::Upstream { .. }
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. }
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => vec![],
    }
}

/// FLOPs per example: 2 x the multiply-adds of the contractions (conv,
/// depthwise conv, dense, rbf, and their input and kernel gradients, which
/// cost what the forward op does), the convention of Keras' reference
/// figures; other ops count 0. Taps on `same` zero padding are counted.
pub fn flops(op: &Op, inputs: &[&Shape], output: &Shape) -> u64 {
    let channels = inputs.first().map_or(0, |s| s.channels());
    let spatial = |s: &Shape| s.0.iter().take(s.rank().saturating_sub(1)).product::<u64>();
    let macs = match op {
        Op::Conv2d { kernel, groups, .. } => output
            .elements()
            .saturating_mul(kernel[0] * kernel[1] * (channels / (*groups).max(1))),
        // Each input value times each tap and filter: the convolution it
        // transposes, from the output back to the input.
        Op::ConvTranspose2d {
            filters, kernel, ..
        } => inputs[0]
            .elements()
            .saturating_mul(kernel[0] * kernel[1] * filters),
        Op::DepthwiseConv2d { kernel, .. } => {
            output.elements().saturating_mul(kernel[0] * kernel[1])
        }
        Op::Dense { units, .. } | Op::Rbf { units } => spatial(inputs[0])
            .saturating_mul(channels)
            .saturating_mul(*units),
        // A gradient costs what its forward op does (already doubled).
        Op::InputGrad {
            forward,
            slot,
            inputs: shapes,
            ..
        } => return input_grad_flops(forward, *slot, shapes, inputs),
        Op::WeightGrad { forward, index, .. } => return weight_grad_flops(forward, *index, inputs),
        Op::Input { .. }
        | Op::Pool2d { .. }
        | Op::Upsample { .. }
        | Op::Pad { .. }
        | Op::GlobalPool { .. }
        | Op::DepthMaxPool { .. }
        | Op::Flatten
        | Op::Reshape { .. }
        | Op::ChannelSlice { .. }
        | Op::Dropout { .. }
        | Op::BatchNorm { .. }
        | Op::Lrn { .. }
        | Op::ScaleBias
        | Op::Activation(_)
        | Op::Add
        | Op::Concat { .. }
        | Op::Multiply
        | Op::Labels { .. }
        | Op::Upstream { .. }
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. } => 0,
    };
    macs.saturating_mul(2)
}

/// dX = dY . W^T: the forward op's cost, with dY as its output and input
/// `slot` (of shapes `shapes`) as its input.
fn input_grad_flops(forward: &Op, slot: usize, shapes: &[Vec<u64>], inputs: &[&Shape]) -> u64 {
    let rule = gradient(forward, shapes.len());
    let needs = rule.inputs.get(slot).map_or(&[][..], Vec::as_slice);
    GradInputs::named(needs, inputs).map_or(0, |wired| {
        flops(forward, &[&Shape(shapes[slot].clone())], wired.dy)
    })
}

/// dW = X^T . dY: the forward op's cost, for its first weight (the kernel),
/// whose rule reads the forward input; other weights count 0.
fn weight_grad_flops(forward: &Op, index: usize, inputs: &[&Shape]) -> u64 {
    let needs = weight_needs(forward, index).unwrap_or_default();
    match GradInputs::named(&needs, inputs) {
        Some(GradInputs {
            dy, input: Some(x), ..
        }) if index == 0 => flops(forward, &[x], dy),
        Some(_) | None => 0,
    }
}

/// `2` or `[2, 3]`, as the language writes a pair.
fn pair(p: [u64; 2]) -> String {
    if p[0] == p[1] {
        p[0].to_string()
    } else {
        format!("[{}, {}]", p[0], p[1])
    }
}

/// The channels `first..last` of the last axis of `input` that
/// `channels(start, end)` keeps: a negative index counts from the end, as
/// Python's; unlike Python's, an index out of range, or an empty slice, is
/// an error rather than clipped.
pub fn channel_range(start: i64, end: i64, input: &Shape) -> Result<(u64, u64), ShapeError> {
    let channels = input.0.last().copied().unwrap_or(0);
    let error = || ShapeError::Slice {
        start,
        end,
        channels,
        input: input.clone(),
    };
    let resolve = |i: i64| {
        let c = i64::try_from(channels).ok()?;
        let i = if i < 0 { i.checked_add(c)? } else { i };
        u64::try_from(i).ok().filter(|&i| i <= channels)
    };
    match (input.rank(), resolve(start), resolve(end)) {
        (1.., Some(first), Some(last)) if first < last => Ok((first, last)),
        _ => Err(error()),
    }
}

fn nonzero(op: &Op, value: u64, what: &'static str) -> Result<(), ShapeError> {
    if value == 0 {
        Err(ShapeError::Zero {
            op: op.name().to_string(),
            what,
        })
    } else {
        Ok(())
    }
}

fn image(op: &Op, s: &Shape) -> Result<(u64, u64, u64), ShapeError> {
    match s.0[..] {
        [h, w, c] => Ok((h, w, c)),
        _ => Err(ShapeError::Rank {
            op: op.name().to_string(),
            expected: "an image [height, width, channels]",
            got: s.clone(),
        }),
    }
}

/// The shape of a loss on `scores` (`[classes]`, or `[h, w, classes]` scored
/// per pixel) against `labels`, one per row of scores: the labels' shape.
fn scored(op: &Op, scores: &Shape, labels: &Shape) -> Result<Shape, ShapeError> {
    if !matches!(scores.rank(), 1 | 3) {
        return Err(ShapeError::Rank {
            op: op.name().to_string(),
            expected: "class scores [classes] or per-pixel scores [h, w, classes]",
            got: scores.clone(),
        });
    }
    let mut expected = scores.0.clone();
    *expected.last_mut().expect("rank 1 or 3") = 1;
    if labels.0 != expected {
        return Err(ShapeError::Mismatch {
            op: Combine::Score,
            lhs: scores.clone(),
            rhs: labels.clone(),
        });
    }
    Ok(labels.clone())
}

fn vector(op: &Op, s: &Shape) -> Result<(), ShapeError> {
    if s.rank() == 1 {
        Ok(())
    } else {
        Err(ShapeError::Rank {
            op: op.name().to_string(),
            expected: "a vector [features]",
            got: s.clone(),
        })
    }
}

fn checked_mul(a: u64, b: u64, rest: &[u64]) -> Result<u64, ShapeError> {
    a.checked_mul(b).ok_or_else(|| ShapeError::TooLarge {
        shape: format!("{rest:?} x {a} x {b}"),
    })
}

fn checked_elements(dims: &[u64]) -> Result<(), ShapeError> {
    let total = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    match total {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(ShapeError::TooLarge {
            shape: Shape(dims.to_vec()).to_string(),
        }),
    }
}

fn add(inputs: &[&Shape]) -> Result<Shape, ShapeError> {
    for other in &inputs[1..] {
        if *other != inputs[0] {
            return Err(ShapeError::Mismatch {
                op: Combine::Add,
                lhs: inputs[0].clone(),
                rhs: (*other).clone(),
            });
        }
    }
    Ok(inputs[0].clone())
}

fn concat(inputs: &[&Shape], axis: usize) -> Result<Shape, ShapeError> {
    let rank = inputs[0].rank();
    if axis >= rank {
        return Err(ShapeError::BadAxis {
            axis: axis as i64,
            rank,
        });
    }
    let mut out = inputs[0].clone();
    for other in &inputs[1..] {
        let agrees =
            other.rank() == rank && (0..rank).all(|a| a == axis || other.0[a] == inputs[0].0[a]);
        if !agrees {
            return Err(ShapeError::Mismatch {
                op: Combine::Concat { axis },
                lhs: inputs[0].clone(),
                rhs: (*other).clone(),
            });
        }
        out.0[axis] =
            out.0[axis]
                .checked_add(other.0[axis])
                .ok_or_else(|| ShapeError::TooLarge {
                    shape: "concatenation".into(),
                })?;
    }
    Ok(out)
}

/// The height and width of an `[h, w]` image padded by `amounts` (`[top,
/// bottom, left, right]`, negative: cropped); an error when cropping leaves
/// no row or no column.
fn padded(amounts: [i64; 4], [h, w]: [u64; 2]) -> Result<[u64; 2], ShapeError> {
    let [top, bottom, left, right] = amounts.map(i128::from);
    let rows = i128::from(h) + top + bottom;
    let columns = i128::from(w) + left + right;
    if rows > 0 && columns > 0 {
        // Anything beyond 64 bits is far beyond the element limit checked
        // after this rule.
        let clamp = |v: i128| u64::try_from(v).unwrap_or(u64::MAX);
        return Ok([clamp(rows), clamp(columns)]);
    }
    Err(ShapeError::CropTooLarge {
        crop: amounts.map(i64::saturating_neg),
        input_h: h,
        input_w: w,
    })
}

/// `x * s`: `s` is `[c]`, `[1, 1, c]` or the shape of `x`.
fn multiply(x: &Shape, s: &Shape) -> Result<Shape, ShapeError> {
    let broadcastable = s == x
        || (s.rank() == 1 || s.0.iter().rev().skip(1).all(|&d| d == 1))
            && s.channels() == x.channels();
    if broadcastable && s.rank() <= x.rank() {
        Ok(x.clone())
    } else {
        Err(ShapeError::Mismatch {
            op: Combine::Multiply,
            lhs: x.clone(),
            rhs: s.clone(),
        })
    }
}

/// The shape `target` gives `input`'s values, its -1 (at most one, as the
/// layer's argument checked) filled with what the other entries leave.
fn reshaped(input: &Shape, target: &[i64]) -> Result<Shape, ShapeError> {
    let elements = input.elements();
    let fail = |reason: String| ShapeError::Reshape {
        input: input.clone(),
        elements,
        target: target
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        reason,
    };
    // The layer's argument checks these; a graph built otherwise gets an
    // error, not a division by zero.
    if target.iter().any(|&d| d == 0 || d < -1) || target.iter().filter(|&&d| d < 0).count() > 1 {
        return Err(fail(
            "its dimensions must be positive, and at most one -1".into(),
        ));
    }
    let known = target
        .iter()
        .filter(|&&d| d > 0)
        .try_fold(1u64, |p, &d| p.checked_mul(d as u64))
        .ok_or_else(|| fail("the target is too large".into()))?;
    let inferred = target.iter().any(|&d| d < 0);
    if inferred {
        if !elements.is_multiple_of(known) {
            return Err(fail(format!(
                "the other dimensions hold {known} values, which do not divide {elements}"
            )));
        }
        let rest = elements / known;
        Ok(Shape(
            target
                .iter()
                .map(|&d| if d < 0 { rest } else { d as u64 })
                .collect(),
        ))
    } else if known != elements {
        Err(fail(format!("it holds {known} values")))
    } else {
        Ok(Shape(target.iter().map(|&d| d as u64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Padding;

    fn conv(filters: u64, k: u64, s: u64, padding: Padding) -> Op {
        Op::Conv2d {
            filters,
            kernel: [k, k],
            stride: [s, s],
            padding,
            dilation: [1, 1],
            bias: true,
            groups: 1,
        }
    }

    #[test]
    fn conv_shapes_follow_tensorflow() {
        let x = Shape(vec![28, 28, 1]);
        assert_eq!(
            infer(&conv(64, 7, 1, Padding::Same), &[&x]).unwrap(),
            Shape(vec![28, 28, 64])
        );
        assert_eq!(
            infer(&conv(64, 7, 2, Padding::Same), &[&x]).unwrap(),
            Shape(vec![14, 14, 64])
        );
        assert_eq!(
            infer(&conv(6, 5, 1, Padding::Valid), &[&Shape(vec![32, 32, 1])]).unwrap(),
            Shape(vec![28, 28, 6])
        );
        assert_eq!(
            infer(
                &conv(96, 11, 4, Padding::Valid),
                &[&Shape(vec![227, 227, 3])]
            )
            .unwrap(),
            Shape(vec![55, 55, 96])
        );
    }

    #[test]
    fn explicit_padding_sizes_convolutions_and_pools_per_side() {
        let x = Shape(vec![5, 6, 3]);
        let pads = Padding::explicit([[2, 1], [0, 3]], false);
        // (5 + 3 - 3) + 1 = 6 rows, (6 + 3 - 3) + 1 = 7 columns.
        assert_eq!(
            infer(&conv(4, 3, 1, pads), &[&x]).unwrap(),
            Shape(vec![6, 7, 4])
        );
        let pool = |size: u64, padding| Op::Pool2d {
            kind: crate::graph::PoolKind::Max,
            size: [size, size],
            stride: [2, 2],
            padding,
        };
        // Rows: (5 + 3 - 4) / 2 + 1 = 3; columns: (6 + 3 - 4) / 2 + 1 = 3.
        assert_eq!(infer(&pool(4, pads), &[&x]).unwrap(), Shape(vec![3, 3, 3]));
        // A side padded as much as the window: a window of padding only.
        let err = infer(&pool(3, pads), &[&x]).unwrap_err();
        assert!(matches!(err, ShapeError::BadPadding { .. }), "{err}");
        assert!(err.to_string().contains("[2, 1, 0, 3]"), "{err}");
        // Too little padding for the kernel names the padding.
        let err = infer(
            &conv(4, 9, 1, Padding::explicit([[1, 1], [0, 0]], false)),
            &[&x],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel 9x9 does not fit into the 5x6 input with padding [1, 1, 0, 0]: the output would be empty"
        );
    }

    #[test]
    fn padding_adds_rows_and_columns_and_cropping_removes_them() {
        let x = Shape(vec![4, 5, 2]);
        let pad = |top, bottom, left, right| Op::Pad {
            top,
            bottom,
            left,
            right,
        };
        assert_eq!(
            infer(&pad(1, 2, 0, 3), &[&x]).unwrap(),
            Shape(vec![7, 8, 2])
        );
        assert_eq!(
            infer(&pad(-1, -2, 0, -4), &[&x]).unwrap(),
            Shape(vec![1, 1, 2])
        );
        let err = infer(&pad(-2, -2, -1, 0), &[&x]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot crop [2, 2, 1, 0] (top, bottom, left, right) from the 4x5 input: \
             that removes 4 of its 4 rows and 1 of its 5 columns"
        );
        assert!(err.hint().is_some());
        assert_eq!(pad(0, 1, 2, 0).name(), "zero_padding");
        assert_eq!(pad(-1, 0, 0, 0).name(), "cropping");
        assert_eq!(
            pad(-1, 0, -2, 0).to_string(),
            "cropping(top=1, bottom=0, left=2, right=0)"
        );
    }

    #[test]
    fn kernel_larger_than_input_is_an_error() {
        let err = infer(&conv(8, 7, 1, Padding::Valid), &[&Shape(vec![5, 5, 3])]).unwrap_err();
        assert!(
            matches!(err, ShapeError::WindowTooLarge { input_h: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn conv_params_use_the_seed_layout() {
        let p = params(&conv(64, 7, 1, Padding::Same), &[&Shape(vec![28, 28, 1])]);
        assert_eq!(p[0].1, vec![7, 7, 1, 64]);
        assert_eq!(p[1].1, vec![64]);
    }

    fn conv_transpose(stride: u64, padding: Padding, output_padding: Option<[u64; 2]>) -> Op {
        Op::ConvTranspose2d {
            filters: 8,
            kernel: [3, 3],
            stride: [stride, stride],
            padding,
            output_padding,
            dilation: [1, 1],
            bias: true,
        }
    }

    #[test]
    fn conv_transpose_shapes_and_weights_follow_keras() {
        let x = Shape(vec![7, 5, 16]);
        let same = conv_transpose(2, Padding::Same, None);
        assert_eq!(infer(&same, &[&x]).unwrap(), Shape(vec![14, 10, 8]));
        let valid = conv_transpose(2, Padding::Valid, Some([1, 1]));
        assert_eq!(infer(&valid, &[&x]).unwrap(), Shape(vec![16, 12, 8]));
        let p = params(&same, &[&x]);
        assert_eq!(p[0].1, vec![3, 3, 8, 16], "filters before input channels");
        assert_eq!(p[1].1, vec![8]);
        // Each input value meets every tap of every filter.
        let y = infer(&same, &[&x]).unwrap();
        assert_eq!(flops(&same, &[&x], &y), 2 * 7 * 5 * 16 * 9 * 8);
    }

    #[test]
    fn conv_transpose_refuses_what_keras_refuses() {
        let x = Shape(vec![7, 7, 16]);
        assert_eq!(
            infer(&conv_transpose(2, Padding::Same, Some([2, 0])), &[&x]),
            Err(ShapeError::OutputPadding {
                output_padding: [2, 0],
                stride: [2, 2],
            })
        );
        let dilated = Op::ConvTranspose2d {
            filters: 8,
            kernel: [3, 3],
            stride: [2, 2],
            padding: Padding::Same,
            output_padding: None,
            dilation: [1, 2],
            bias: false,
        };
        assert!(matches!(
            infer(&dilated, &[&x]),
            Err(ShapeError::DilatedStride { .. })
        ));
        assert!(matches!(
            infer(&conv_transpose(2, Padding::Same, None), &[&Shape(vec![49])]),
            Err(ShapeError::Rank { .. })
        ));
    }

    #[test]
    fn upsampling_multiplies_height_and_width() {
        let up = Op::Upsample {
            factor: [2, 3],
            mode: crate::graph::Interpolation::Bilinear,
        };
        let x = Shape(vec![7, 5, 4]);
        assert_eq!(infer(&up, &[&x]).unwrap(), Shape(vec![14, 15, 4]));
        assert!(params(&up, &[&x]).is_empty());
        let zero = Op::Upsample {
            factor: [0, 3],
            mode: crate::graph::Interpolation::Nearest,
        };
        assert!(matches!(
            infer(&zero, &[&x]),
            Err(ShapeError::Zero { what: "factor", .. })
        ));
    }

    #[test]
    fn a_channel_slice_keeps_its_range_of_the_last_axis() {
        let x = Shape(vec![4, 4, 10]);
        let slice = |start, end| infer(&Op::ChannelSlice { start, end }, &[&x]);
        assert_eq!(slice(2, 6).unwrap(), Shape(vec![4, 4, 4]));
        assert_eq!(slice(-4, 10).unwrap(), Shape(vec![4, 4, 4]));
        assert_eq!(slice(0, -1).unwrap(), Shape(vec![4, 4, 9]));
        assert_eq!(channel_range(-3, -1, &x).unwrap(), (7, 9));
        for (start, end) in [(6, 2), (3, 3), (0, 11), (-11, 2), (i64::MIN, 1)] {
            let err = slice(start, end).unwrap_err();
            assert!(
                matches!(err, ShapeError::Slice { channels: 10, .. }),
                "{err}"
            );
        }
        assert!(channel_range(0, 1, &Shape(vec![])).is_err());
    }

    #[test]
    fn a_grouped_conv_has_keras_kernel_and_needs_divisible_channels() {
        let grouped = |filters, groups| Op::Conv2d {
            filters,
            kernel: [3, 3],
            stride: [1, 1],
            padding: Padding::Same,
            dilation: [1, 1],
            bias: true,
            groups,
        };
        let x = Shape(vec![8, 8, 128]);
        let op = grouped(128, 32);
        assert_eq!(infer(&op, &[&x]).unwrap(), Shape(vec![8, 8, 128]));
        // Keras's Conv2D(128, 3, groups=32): kernel (3, 3, 4, 128), 4736 weights.
        let p = params(&op, &[&x]);
        assert_eq!(
            (p[0].1.clone(), p[1].1.clone()),
            (vec![3, 3, 4, 128], vec![128])
        );
        let y = Shape(vec![8, 8, 128]);
        assert_eq!(flops(&op, &[&x], &y), 2 * 64 * 128 * 9 * 4);
        for (channels, filters) in [(6, 8), (8, 6)] {
            let err = infer(&grouped(filters, 4), &[&Shape(vec![8, 8, channels])]).unwrap_err();
            assert_eq!(
                err,
                ShapeError::Groups {
                    groups: 4,
                    channels,
                    filters
                }
            );
        }
    }

    #[test]
    fn add_and_multiply_check_shapes() {
        let a = Shape(vec![14, 14, 64]);
        let b = Shape(vec![7, 7, 128]);
        assert!(matches!(
            infer(&Op::Add, &[&a, &b]),
            Err(ShapeError::Mismatch {
                op: Combine::Add,
                ..
            })
        ));
        assert_eq!(infer(&Op::Multiply, &[&a, &Shape(vec![64])]).unwrap(), a);
        assert!(infer(&Op::Multiply, &[&a, &Shape(vec![32])]).is_err());
    }

    #[test]
    fn concat_sums_the_axis() {
        let a = Shape(vec![28, 28, 64]);
        let b = Shape(vec![28, 28, 32]);
        assert_eq!(
            infer(&Op::Concat { axis: 2 }, &[&a, &b]).unwrap(),
            Shape(vec![28, 28, 96])
        );
        assert!(infer(&Op::Concat { axis: 2 }, &[&a, &Shape(vec![14, 14, 32])]).is_err());
    }

    #[test]
    fn huge_tensors_are_rejected() {
        let x = Shape(vec![100_000, 100_000, 3]);
        assert!(matches!(
            infer(&conv(1000, 1, 1, Padding::Same), &[&x]),
            Err(ShapeError::TooLarge { .. })
        ));
    }

    #[test]
    fn huge_weights_are_rejected() {
        // A small output, but a kernel of 64 x 10^18 entries.
        let x = Shape(vec![8, 8, 64]);
        assert!(matches!(
            infer(&conv(1_000_000, 1_000_000, 1, Padding::Same), &[&x]),
            Err(ShapeError::WeightTooLarge { name: "kernel", .. })
        ));
    }

    #[test]
    fn mismatches_name_the_op_and_both_shapes() {
        let a = Shape(vec![4, 4, 8]);
        let b = Shape(vec![2, 2, 16]);
        let add = infer(&Op::Add, &[&a, &b]).unwrap_err();
        assert_eq!(
            add.to_string(),
            "cannot add tensors of shapes [4, 4, 8] and [2, 2, 16]: a sum needs equal shapes"
        );
        assert!(add.hint().is_some_and(|h| h.contains("projection")));
        let concat = infer(&Op::Concat { axis: 2 }, &[&a, &b]).unwrap_err();
        assert_eq!(
            concat,
            ShapeError::Mismatch {
                op: Combine::Concat { axis: 2 },
                lhs: a.clone(),
                rhs: b.clone(),
            }
        );
        assert!(concat
            .to_string()
            .ends_with("all dimensions but axis 2 must be equal"));
        let multiply = infer(&Op::Multiply, &[&a, &Shape(vec![3])]).unwrap_err();
        assert!(
            multiply
                .to_string()
                .ends_with("be a per-channel vector [8]"),
            "{multiply}"
        );
    }

    #[test]
    fn a_diagnostic_keeps_the_hint_as_a_note() {
        let error = infer(&Op::Add, &[&Shape(vec![4, 4, 8]), &Shape(vec![2, 2, 8])]).unwrap_err();
        let diagnostic = error.to_diagnostic(Span::default(), "in `add1`");
        assert_eq!(diagnostic.message, error.to_string());
        assert_eq!(diagnostic.notes, vec![error.hint().expect("a hint")]);
    }

    #[test]
    fn a_gradient_costs_what_its_forward_op_does() {
        let x = Shape(vec![8, 8, 3]);
        let op = conv(4, 3, 1, Padding::Same);
        let y = infer(&op, &[&x]).unwrap();
        let forward = flops(&op, &[&x], &y);
        let input_grad = Op::InputGrad {
            forward: Box::new(op.clone()),
            slot: 0,
            inputs: vec![x.0.clone()],
            node: "conv".into(),
        };
        assert_eq!(flops(&input_grad, &[&y], &x), forward);
        let weight_grad = |index| Op::WeightGrad {
            forward: Box::new(op.clone()),
            index,
            weight: "conv.kernel".into(),
            shape: vec![3, 3, 3, 4],
        };
        let kernel = Shape(vec![3, 3, 3, 4]);
        assert_eq!(flops(&weight_grad(0), &[&y, &x], &kernel), forward);
        assert_eq!(
            flops(&weight_grad(1), &[&y], &Shape(vec![4])),
            0,
            "the bias"
        );
    }

    #[test]
    fn flops_count_multiply_adds_twice() {
        let x = Shape(vec![28, 28, 1]);
        let op = conv(64, 7, 1, Padding::Same);
        let y = infer(&op, &[&x]).unwrap();
        assert_eq!(flops(&op, &[&x], &y), 2 * 28 * 28 * 64 * 49);
    }
}
