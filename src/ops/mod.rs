//! The rules of each primitive op: output shape, weight shapes, and cost.
//!
//! One function per rule, each an exhaustive `match` over [`Op`], so that a
//! new op does not compile until every rule knows it. Shapes are per
//! example (the batch dimension is implicit).

mod grad;
mod window;

use thiserror::Error;

use crate::graph::{Op, PoolKind, Shape};
pub use grad::{gradient, Need, Rule};
pub use window::{output_size, same_padding};

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
    /// A window does not fit into its input with `valid` padding.
    #[error("the {what} {window} does not fit into the {input_h}x{input_w} input with padding valid: the output would be empty")]
    WindowTooLarge {
        /// `kernel` or `pool size`.
        what: &'static str,
        /// The (dilated) window, e.g. `7x7`.
        window: String,
        /// Input height.
        input_h: u64,
        /// Input width.
        input_w: u64,
    },
    /// Operands of an element-wise op differ.
    #[error("cannot {verb} tensors of shapes {lhs} and {rhs}: {why}")]
    Mismatch {
        /// `add`, `multiply`...
        verb: &'static str,
        /// The left shape.
        lhs: Shape,
        /// The right shape.
        rhs: Shape,
        /// What would have to agree.
        why: String,
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
    /// An attribute is zero where it must be positive.
    #[error("`{op}` needs a positive {what}, got 0")]
    Zero {
        /// The op (or the layer it implements).
        op: String,
        /// The attribute.
        what: &'static str,
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

impl ShapeError {
    /// The error as reported for a call of layer `layer`, which the user
    /// wrote and which may differ from the op's name (`conv` is `conv2d`).
    pub fn for_layer(mut self, layer: &str) -> ShapeError {
        if let ShapeError::Rank { op, .. } | ShapeError::Zero { op, .. } = &mut self {
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
            ShapeError::Mismatch { verb: "add", lhs, rhs, .. } if lhs.rank() == 3 && rhs.rank() == 3 => Some(
                "help: a residual shortcut whose shape changes needs a projection, e.g. `conv(filters, 1, stride: 2)` on the skip path"
                    .into(),
            ),
            ShapeError::Rank { expected, .. } if expected.contains("[features]") => {
                Some("help: insert `flatten` or a global pooling layer before it".into())
            }
            _ => None,
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
            ..
        } => {
            nonzero(op, *filters, "number of filters")?;
            let (h, w, _) = image(op, inputs[0])?;
            let (oh, ow) =
                window::apply(op, "kernel", [h, w], *kernel, *stride, *dilation, *padding)?;
            Shape(vec![oh, ow, *filters])
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
        Op::Labels => Shape(vec![1]),
        Op::CrossEntropy { .. } => {
            vector(op, inputs[0])?;
            Shape(vec![1])
        }
        Op::CrossEntropyGrad { .. } => {
            vector(op, inputs[0])?;
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
            ..
        } => {
            let mut p = vec![(
                "kernel",
                vec![kernel[0], kernel[1], channels, *filters],
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
        Op::BatchNorm { .. } => vec![
            ("gamma", vec![channels], true),
            ("beta", vec![channels], true),
            ("moving_mean", vec![channels], false),
            ("moving_variance", vec![channels], false),
        ],
        Op::ScaleBias => vec![
            ("coefficient", vec![channels], true),
            ("bias", vec![channels], true),
        ],
        Op::Input { .. }
        | Op::Pool2d { .. }
        | Op::GlobalPool { .. }
        | Op::DepthMaxPool { .. }
        | Op::Flatten
        | Op::Dropout { .. }
        | Op::Lrn { .. }
        | Op::Activation(_)
        | Op::Add
        | Op::Concat { .. }
        | Op::Multiply
        | Op::Labels
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
    match op {
        // dX = dY . W^T: the forward op's cost, with dY as its output.
        Op::InputGrad {
            forward,
            slot,
            inputs: shapes,
            ..
        } => {
            let shape = &shapes[*slot];
            return flops(forward, &[&Shape(shape.clone())], inputs[0]);
        }
        // dW = X^T . dY: the same, from the gradient rule's inputs [dY, X].
        Op::WeightGrad {
            forward, index: 0, ..
        } if inputs.len() >= 2 => return flops(forward, &inputs[1..2], inputs[0]),
        _ => {}
    }
    let channels = inputs.first().map_or(0, |s| s.channels());
    let spatial = |s: &Shape| s.0.iter().take(s.rank().saturating_sub(1)).product::<u64>();
    let macs = match op {
        Op::Conv2d { kernel, .. } => output
            .elements()
            .saturating_mul(kernel[0] * kernel[1] * channels),
        Op::DepthwiseConv2d { kernel, .. } => {
            output.elements().saturating_mul(kernel[0] * kernel[1])
        }
        Op::Dense { units, .. } | Op::Rbf { units } => spatial(inputs[0])
            .saturating_mul(channels)
            .saturating_mul(*units),
        Op::Input { .. }
        | Op::Pool2d { .. }
        | Op::GlobalPool { .. }
        | Op::DepthMaxPool { .. }
        | Op::Flatten
        | Op::Dropout { .. }
        | Op::BatchNorm { .. }
        | Op::Lrn { .. }
        | Op::ScaleBias
        | Op::Activation(_)
        | Op::Add
        | Op::Concat { .. }
        | Op::Multiply
        | Op::Labels
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. }
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => 0,
    };
    macs.saturating_mul(2)
}

/// Whether the op's pooling kind is average (for display).
pub fn is_average(op: &Op) -> bool {
    matches!(
        op,
        Op::Pool2d {
            kind: PoolKind::Avg,
            ..
        } | Op::GlobalPool {
            kind: PoolKind::Avg
        }
    )
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
                verb: "add",
                lhs: inputs[0].clone(),
                rhs: (*other).clone(),
                why: "a sum needs equal shapes".into(),
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
                verb: "concatenate",
                lhs: inputs[0].clone(),
                rhs: (*other).clone(),
                why: format!("all dimensions but axis {axis} must be equal"),
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

/// `x * s`: `s` is `[c]`, `[1, 1, c]` or the shape of `x`.
fn multiply(x: &Shape, s: &Shape) -> Result<Shape, ShapeError> {
    let broadcastable = s == x
        || (s.rank() == 1 || s.0.iter().rev().skip(1).all(|&d| d == 1))
            && s.channels() == x.channels();
    if broadcastable && s.rank() <= x.rank() {
        Ok(x.clone())
    } else {
        Err(ShapeError::Mismatch {
            verb: "multiply",
            lhs: x.clone(),
            rhs: s.clone(),
            why: format!(
                "the right side must have the left side's shape or be a per-channel vector [{}]",
                x.channels()
            ),
        })
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

    #[test]
    fn add_and_multiply_check_shapes() {
        let a = Shape(vec![14, 14, 64]);
        let b = Shape(vec![7, 7, 128]);
        assert!(matches!(
            infer(&Op::Add, &[&a, &b]),
            Err(ShapeError::Mismatch { verb: "add", .. })
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
    fn flops_count_multiply_adds_twice() {
        let x = Shape(vec![28, 28, 1]);
        let op = conv(64, 7, 1, Padding::Same);
        let y = infer(&op, &[&x]).unwrap();
        assert_eq!(flops(&op, &[&x], &y), 2 * 28 * 28 * 64 * 49);
    }
}
