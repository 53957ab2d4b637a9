//! Gradient rules: for each forward op, what the gradient of each of its
//! inputs and weights is computed from. The math of each rule is in a
//! comment; the kernels that compute them are chosen when the training
//! graph is lowered (`passes/lower/train.rs`, by the op's kernel family).
//!
//! A rule lists the values a gradient reads ([`Need`]); autodiff wires them
//! as the gradient node's inputs in the rule's order, and the lowering reads
//! them back by name with [`GradInputs::named`], so the order of a list here
//! matters to no one.

use crate::graph::{Activation, Op, PoolKind};

/// A value a gradient is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The gradient of the loss with respect to the op's output.
    Dy,
    /// The forward op's input number `n`.
    Input(usize),
    /// The forward op's output (or what its kernel kept of it: dropout's mask).
    Output,
}

/// How the gradients of one op's inputs and weights are computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// For each input slot, what its gradient needs.
    pub inputs: Vec<Vec<Need>>,
    /// For each weight (in the order of `ops::params`), what its gradient
    /// needs, or `None` for weights that are not learned by gradient
    /// (batchnorm's moving statistics).
    pub weights: Vec<Option<Vec<Need>>>,
}

use Need::{Dy, Input, Output};

/// The inputs of one gradient node, by name: what its kernel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradInputs<T> {
    /// The gradient of the loss with respect to the forward op's output.
    pub dy: T,
    /// The forward input the rule reads ([`Need::Input`]): the op's own
    /// input `x`, or for `multiply` the other operand.
    pub input: Option<T>,
    /// The forward output the rule reads ([`Need::Output`]).
    pub output: Option<T>,
}

impl<T: Copy> GradInputs<T> {
    /// Names `wired`, the inputs of a gradient node that autodiff wired from
    /// `needs` in the same order. `None` when they do not fit: a different
    /// count, no `Dy`, or a need named twice (no rule reads two forward
    /// inputs or two outputs).
    pub fn named(needs: &[Need], wired: &[T]) -> Option<GradInputs<T>> {
        if needs.len() != wired.len() {
            return None;
        }
        let (mut dy, mut input, mut output) = (None, None, None);
        for (need, &value) in needs.iter().zip(wired) {
            let field = match need {
                Need::Dy => &mut dy,
                Need::Input(_) => &mut input,
                Need::Output => &mut output,
            };
            if field.replace(value).is_some() {
                return None;
            }
        }
        Some(GradInputs {
            dy: dy?,
            input,
            output,
        })
    }
}

/// The gradient rule of `op`, for an op with `arity` inputs.
pub fn gradient(op: &Op, arity: usize) -> Rule {
    let rule = |inputs: Vec<Vec<Need>>, weights: Vec<Option<Vec<Need>>>| Rule { inputs, weights };
    match op {
        // dX = col2im(dY . W^T); dW = im2col(X)^T . dY; db = sum dY (a grouped
        // convolution: the same within each group)
        // conv_transpose (Y = conv_W^T(X), the transpose of the linear map
        // conv_W): dX = conv_W(dY); dW = im2col(dY)^T . X; db = sum dY
        Op::Conv2d { bias, .. }
        | Op::ConvTranspose2d { bias, .. }
        | Op::DepthwiseConv2d { bias, .. }
        | Op::Dense { bias, .. } => {
            let mut weights = vec![Some(vec![Dy, Input(0)])];
            if *bias {
                weights.push(Some(vec![Dy]));
            }
            rule(vec![vec![Dy]], weights)
        }
        // y_j = sum_i (x_i - c_ij)^2: dx_i = 2 sum_j dy_j (x_i - c_ij); dc_ij = -2 dy_j (x_i - c_ij)
        Op::Rbf { .. } => rule(vec![vec![Dy, Input(0)]], vec![Some(vec![Dy, Input(0)])]),
        // maxpool, as TF's MaxPoolGrad (Keras MaxPooling2D): each window's dY goes
        // to its first maximum in row-major order, found again in X; ties are not split
        Op::Pool2d {
            kind: PoolKind::Max,
            ..
        } => rule(vec![vec![Dy, Input(0)]], vec![]),
        // global_max_pool is tf.reduce_max over h, w (Keras GlobalMaxPooling2D);
        // depth_maxpool(k) is tf.reduce_max over groups of k channels (Hands-On ML's
        // DepthPool; TF has no gradient of tf.nn.max_pool over depth). TF's Max gradient
        // splits dY equally among tied maxima: dX = 1[X == max] / count * dY, with max
        // and count found again in X
        Op::GlobalPool {
            kind: PoolKind::Max,
        }
        | Op::DepthMaxPool { .. } => rule(vec![vec![Dy, Input(0)]], vec![]),
        // average: dY / count spread over each window's in-bounds cells
        Op::Pool2d {
            kind: PoolKind::Avg,
            ..
        }
        | Op::GlobalPool {
            kind: PoolKind::Avg,
        } => rule(vec![vec![Dy]], vec![]),
        // Y = A_h X A_w^T per channel, A the interpolation matrix of each axis
        // (nearest: each output row reads one input row; bilinear: two):
        // dX = A_h^T dY A_w, which for nearest sums each block of dY
        Op::Upsample { .. } => rule(vec![vec![Dy]], vec![]),
        // a reshape: dX = dY, reshaped
        Op::Flatten | Op::Reshape { .. } => rule(vec![vec![Dy]], vec![]),
        // y = x[..., a:b]: dX[..., a:b] = dY, zero elsewhere
        Op::ChannelSlice { .. } => rule(vec![vec![Dy]], vec![]),
        // y[i, j] = x[i - top, j - left]: dX[i, j] = dY[i + top, j + left], the same
        // copy with the amounts negated (padding's gradient crops, cropping's pads)
        Op::Pad { .. } => rule(vec![vec![Dy]], vec![]),
        // dX = dY * mask / (1 - rate), with the forward pass's mask
        Op::Dropout { .. } => rule(vec![vec![Dy, Output]], vec![]),
        // x̂ = (x - mean) / sqrt(var + eps) with batch statistics:
        // dX = gamma / sqrt(var + eps) * (dY - mean(dY) - x̂ mean(dY x̂));
        // dgamma = sum dY x̂; dbeta = sum dY; the moving statistics are updated, not learned
        // (without gamma or beta, as `ops::params` lists them)
        Op::BatchNorm { center, scale, .. } => {
            let gamma = scale.then(|| Some(vec![Dy, Input(0)]));
            // The layer's weight gradients share one kernel, run for the
            // first of them, which reads the input: beta's, without gamma.
            let beta_needs = if *scale { vec![Dy] } else { vec![Dy, Input(0)] };
            let beta = center.then(|| Some(beta_needs));
            let weights = gamma.into_iter().chain(beta).chain([None, None]).collect();
            rule(vec![vec![Dy, Input(0)]], weights)
        }
        // d_i = bias + alpha sum_{|j-i|<=r} x_j^2, y_i = x_i d_i^-beta:
        // dx_i = dy_i d_i^-beta - 2 alpha beta x_i sum_{|i-j|<=r} dy_j x_j d_j^(-beta-1)
        Op::Lrn { .. } => rule(vec![vec![Dy, Input(0)]], vec![]),
        // y = x * a + b: dX = dY * a; da = sum dY x; db = sum dY
        Op::ScaleBias => rule(
            vec![vec![Dy]],
            vec![Some(vec![Dy, Input(0)]), Some(vec![Dy])],
        ),
        Op::Activation(activation) => rule(vec![activation_needs(*activation)], vec![]),
        // d/dx_k (x_1 + ... + x_n) = 1; a concatenation's gradient is a slice of dY
        Op::Add | Op::Concat { .. } => rule(vec![vec![Dy]; arity], vec![]),
        // y = x * s (s broadcast per channel): dX = dY * s; ds = sum over pixels of dY x
        Op::Multiply => rule(vec![vec![Dy, Input(1)], vec![Dy, Input(0)]], vec![]),
        // Inputs, labels, losses and gradients are not differentiated again.
        Op::Input { .. }
        | Op::Labels { .. }
        | Op::Upstream { .. }
        | Op::CrossEntropy { .. }
        | Op::CrossEntropyGrad { .. }
        | Op::InputGrad { .. }
        | Op::WeightGrad { .. } => rule(vec![vec![]; arity], vec![]),
    }
}

/// What the gradient of weight `index` of `op` reads, or `None` for a
/// weight that is not learned by gradient (or that `op` does not have).
pub fn weight_needs(op: &Op, index: usize) -> Option<Vec<Need>> {
    // Only single-input ops have weights, so the weight rules do not depend
    // on the arity.
    gradient(op, 1).weights.into_iter().nth(index).flatten()
}

/// What an activation's gradient is computed from: the output where the
/// slope is a function of it, which saves keeping the input alive; the
/// input for the self-gated ones, whose slope is not.
fn activation_needs(activation: Activation) -> Vec<Need> {
    match activation {
        // relu: dy * 1[y > 0]; leaky_relu (alpha > 0): dy * (y > 0 ? 1 : alpha)
        Activation::Relu | Activation::LeakyRelu { .. } => vec![Dy, Output],
        // elu: dy * (y > 0 ? 1 : y + alpha); selu: dy * scale * (y > 0 ? 1 : y / scale + alpha)
        Activation::Elu { .. } | Activation::Selu => vec![Dy, Output],
        // tanh: dy * (1 - y^2); sigmoid: dy * y (1 - y)
        Activation::Tanh | Activation::Sigmoid => vec![Dy, Output],
        // relu6: dy * 1[0 < y < 6]; hard_sigmoid: dy / 6 * 1[0 < y < 1]
        Activation::Relu6 | Activation::HardSigmoid => vec![Dy, Output],
        // swish: dy * s (1 + x (1 - s)), s = sigmoid(x)
        // gelu: dy * (Phi(x) + x phi(x)); its tanh form: dy * (0.5 (1 + t)
        //   + 0.5 x (1 - t^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2))
        // hard_swish: dy * (x < -3 ? 0 : x > 3 ? 1 : (2 x + 3) / 6)
        // mish: dy * (t + x sech^2(softplus(x)) sigmoid(x)), t = tanh(softplus(x))
        Activation::Swish | Activation::Gelu { .. } | Activation::HardSwish | Activation::Mish => {
            vec![Dy, Input(0)]
        }
        // softmax: y * (dy - sum(dy * y))
        Activation::Softmax => vec![Dy, Output],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Padding, Shape};

    #[test]
    fn every_learned_weight_has_a_rule() {
        let x = Shape(vec![8, 8, 4]);
        let ops = [
            Op::Conv2d {
                filters: 3,
                kernel: [3, 3],
                stride: [1, 1],
                padding: Padding::Same,
                dilation: [1, 1],
                bias: true,
                groups: 2,
            },
            Op::Dense {
                units: 5,
                bias: false,
            },
            Op::BatchNorm {
                momentum: 0.99,
                epsilon: 1e-3,
                center: true,
                scale: true,
            },
            Op::BatchNorm {
                momentum: 0.99,
                epsilon: 1e-3,
                center: true,
                scale: false,
            },
            Op::ScaleBias,
        ];
        for op in ops {
            let shape = if matches!(op, Op::Dense { .. }) {
                Shape(vec![4])
            } else {
                x.clone()
            };
            let params = super::super::params(&op, &[&shape]);
            let rule = gradient(&op, 1);
            assert_eq!(rule.weights.len(), params.len(), "{op}");
            for ((name, _, trainable), needs) in params.iter().zip(&rule.weights) {
                assert_eq!(*trainable, needs.is_some(), "{op}: {name}");
            }
        }
    }

    #[test]
    fn gradient_inputs_are_named_whatever_the_order_of_the_rule() {
        let dy_first = GradInputs::named(&[Dy, Input(0)], &["dy", "x"]);
        let x_first = GradInputs::named(&[Input(0), Dy], &["x", "dy"]);
        let expected = GradInputs {
            dy: "dy",
            input: Some("x"),
            output: None,
        };
        assert_eq!(dy_first, Some(expected));
        assert_eq!(x_first, Some(expected));
        let with_output = GradInputs::named(&[Output, Dy], &["y", "dy"]);
        assert_eq!(with_output.and_then(|g| g.output), Some("y"));
    }

    #[test]
    fn gradient_inputs_that_do_not_fit_the_rule_are_refused() {
        assert_eq!(GradInputs::named(&[Dy, Input(0)], &["dy"]), None);
        assert_eq!(GradInputs::named(&[Input(0)], &["x"]), None);
        assert_eq!(GradInputs::named(&[Dy, Dy], &["a", "b"]), None);
        assert_eq!(
            GradInputs::named(&[Dy, Input(0), Input(1)], &["dy", "a", "b"]),
            None
        );
    }

    #[test]
    fn weight_rules_do_not_depend_on_the_arity() {
        let dense = Op::Dense {
            units: 5,
            bias: true,
        };
        assert_eq!(weight_needs(&dense, 0), Some(vec![Dy, Input(0)]));
        assert_eq!(weight_needs(&dense, 1), Some(vec![Dy]));
        assert_eq!(weight_needs(&dense, 2), None);
        let batchnorm = Op::BatchNorm {
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
        };
        assert_eq!(weight_needs(&batchnorm, 2), None, "moving mean");
        // Without gamma, beta comes first and the moving mean second.
        let unscaled = Op::BatchNorm {
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: false,
        };
        assert_eq!(weight_needs(&unscaled, 0), Some(vec![Dy, Input(0)]), "beta");
        assert_eq!(weight_needs(&unscaled, 1), None, "moving mean");
    }

    #[test]
    fn sums_pass_the_gradient_to_every_input() {
        assert_eq!(gradient(&Op::Add, 3).inputs, vec![vec![Dy]; 3]);
        assert_eq!(
            gradient(&Op::Multiply, 2).inputs,
            vec![vec![Dy, Input(1)], vec![Dy, Input(0)]]
        );
    }
}
