//! The kernel family of each op: the one exhaustive sorting of ops by the
//! kernels that compute them, forward and backward.
//!
//! The lowering matches on [`Family`], never on [`Op`]: the forward pass
//! (`Lowering::node`) and the gradients (`input_grad` and `weight_grad` in
//! `train.rs`) each take one arm per family, and a family's arm receives
//! its ops with the attributes its kernels need ([`Pointwise`],
//! [`WindowKind`], [`Contraction`]), so no function of the lowering needs a
//! fallback arm for ops it does not handle. A new op does not compile
//! until [`family`] sorts it, and a new family not until every lowering has
//! an arm for it. To follow one family from the shape rule to the kernel,
//! see `docs/adding-an-op.md`.

use crate::codegen::contraction::{ConvShape, DenseShape};
use crate::codegen::window::WindowKind;
use crate::graph::{Activation, Interpolation, Op, Padding};
use crate::plan::Geometry;

/// How the back end computes an op.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Family<'op> {
    /// The model's input: a buffer the runtime fills.
    Input,
    /// The labels of a training batch: a buffer the runtime fills.
    Labels,
    /// The upstream gradient of an output, which seeds a gradient
    /// program: a buffer the runtime fills.
    Upstream {
        /// The output it is the gradient of.
        output: &'op str,
    },
    /// A reshape (`flatten`): a view of its input's buffer; its gradient
    /// is a view of dY.
    Reshape,
    /// Channels `start..end` of the last axis (negative indices count from
    /// the end): a strided copy, or a view of the input when it keeps every
    /// channel; its gradient embeds dY in zeros.
    ChannelSlice {
        /// The first channel, as written.
        start: i64,
        /// One past the last, as written.
        end: i64,
    },
    /// Dropout: a random mask and a product while training, a view of its
    /// input at inference; its gradient is dY times the same mask.
    Dropout {
        /// The fraction dropped.
        rate: f64,
    },
    /// One element-wise kernel, and element-wise kernels (or none) for the
    /// gradients.
    Pointwise(Pointwise),
    /// Softmax over the last axis: a row reduction, forward and backward.
    Softmax,
    /// A concatenation: one strided copy per input; each input's gradient
    /// is a copy of its slice of dY.
    Concat {
        /// The axis joined.
        axis: usize,
    },
    /// Zero padding or cropping: the image copied at an offset, zeros
    /// around; its gradient is the copy back, at the opposite offset.
    Pad {
        /// `[top, bottom, left, right]`: positive pads, negative crops.
        amounts: [i64; 4],
    },
    /// A sliding-window kernel: forward, backward-data and (depthwise
    /// convolution) backward-filter passes.
    Window(WindowKind),
    /// A GEMM: `y = x . W (+ b)`, `dX = dY . W^T`, `dW = x^T . dY`.
    Contraction(Contraction),
    /// A grouped convolution (`groups > 1`): its own kernels for the three
    /// passes (`codegen::grouped` says why not the GEMM's).
    Grouped(Grouped),
    /// A transposed convolution: the kernels of the convolution it
    /// transposes with their roles swapped (its forward pass is that
    /// convolution's backward-data pass, its input gradient that
    /// convolution's forward pass), and a bias added by an element-wise
    /// kernel.
    ConvTranspose(ConvTranspose),
    /// Upsampling: a resampling kernel, forward and backward.
    Resample {
        /// Vertical and horizontal factor.
        factor: [usize; 2],
        /// How the new pixels are filled.
        mode: Interpolation,
    },
    /// LeNet-5's RBF units: row reductions, forward and backward.
    Rbf {
        /// Output units.
        units: usize,
    },
    /// The fused softmax cross-entropy, whose kernel also writes the
    /// logits' gradient.
    CrossEntropy {
        /// Label smoothing.
        smoothing: f64,
        /// The loss weight of its output.
        weight: f64,
    },
    /// The logits' gradient: the buffer the loss's kernel wrote.
    CrossEntropyGrad,
    /// The gradient of a forward op's input, lowered by the forward op's family.
    InputGrad(InputGradient<'op>),
    /// The gradient of a forward op's weight, lowered by the forward op's family.
    WeightGrad(WeightGradient<'op>),
}

/// The ops computed by one element-wise kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Pointwise {
    /// An activation.
    Activation(PointwiseActivation),
    /// Batch normalization with its moving statistics (at inference; it
    /// uses the batch's statistics while training).
    BatchNorm {
        /// Momentum of the moving averages.
        momentum: f64,
        /// Added to the variance.
        epsilon: f64,
        /// Whether it has a learned factor `gamma`.
        scale: bool,
    },
    /// `x * coefficient[c] + bias[c]`.
    ScaleBias,
    /// A sum of tensors of equal shape.
    Add,
    /// `x * s`, `s` per channel or of `x`'s shape.
    Multiply,
}

/// The activations computed element by element: all but softmax, which
/// [`family`] sorts into [`Family::Softmax`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum PointwiseActivation {
    /// `max(x, 0)`
    Relu,
    /// `x` if positive, else `alpha * x`.
    LeakyRelu {
        /// The slope for negative inputs.
        alpha: f64,
    },
    /// `x` if positive, else `alpha * (exp(x) - 1)`.
    Elu {
        /// The saturation value for negative inputs.
        alpha: f64,
    },
    /// Scaled ELU with the self-normalising constants.
    Selu,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// `min(max(x, 0), 6)`
    Relu6,
    /// `x * sigmoid(x)`
    Swish,
    /// `x * Phi(x)`, exact or in its tanh form.
    Gelu {
        /// Whether the tanh form is used.
        approximate: bool,
    },
    /// `relu6(x + 3) / 6`
    HardSigmoid,
    /// `x * relu6(x + 3) / 6`
    HardSwish,
    /// `x * tanh(softplus(x))`
    Mish,
}

impl PointwiseActivation {
    /// Whether the gradient's slope is computed from the activation's input
    /// (the self-gated ones: `x` times a function of `x`) rather than from
    /// its output; `ops::grad` wires the same value.
    pub(super) fn slope_reads_input(self) -> bool {
        match self {
            PointwiseActivation::Swish
            | PointwiseActivation::Gelu { .. }
            | PointwiseActivation::HardSwish
            | PointwiseActivation::Mish => true,
            PointwiseActivation::Relu
            | PointwiseActivation::LeakyRelu { .. }
            | PointwiseActivation::Elu { .. }
            | PointwiseActivation::Selu
            | PointwiseActivation::Tanh
            | PointwiseActivation::Sigmoid
            | PointwiseActivation::Relu6
            | PointwiseActivation::HardSigmoid => false,
        }
    }
}

/// The ops computed on the GEMM, with the attributes of their geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contraction {
    /// A 2-D convolution.
    Conv {
        /// Output channels.
        filters: usize,
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Vertical and horizontal stride.
        stride: [usize; 2],
        /// Padding.
        padding: Padding,
        /// Dilation rate.
        dilation: [usize; 2],
        /// Whether a bias is added.
        bias: bool,
    },
    /// A dense layer over the last axis.
    Dense {
        /// Output features.
        units: usize,
        /// Whether a bias is added.
        bias: bool,
    },
}

/// A transposed convolution's attributes: those of the convolution it
/// transposes, whose kernel `[kh, kw, filters, in]` it shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConvTranspose {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Dilation rate.
    pub dilation: [usize; 2],
    /// Whether a bias is added.
    pub bias: bool,
}

impl ConvTranspose {
    /// The convolution it transposes, on `batch` examples: from the
    /// transposed convolution's output (per-example shape `output`, whose
    /// size already holds any output padding) to its input of
    /// `in_channels` channels. Without a bias: the transposed
    /// convolution's bias belongs to its output, not to that convolution's.
    pub(super) fn geometry(self, batch: usize, output: &[usize], in_channels: usize) -> ConvShape {
        ConvShape {
            batch,
            height: output[0],
            width: output[1],
            in_channels: output[2],
            out_channels: in_channels,
            kernel: self.kernel,
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding,
            bias: false,
        }
    }
}

/// A grouped convolution's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grouped {
    /// Output channels, all groups together.
    pub filters: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Dilation rate.
    pub dilation: [usize; 2],
    /// Whether a bias is added.
    pub bias: bool,
    /// Channel groups, at least 2.
    pub groups: usize,
}

impl Grouped {
    /// The layer's sizes on `batch` inputs of per-example shape `input`
    /// (all its input channels).
    pub(super) fn shape(self, batch: usize, input: &[usize]) -> ConvShape {
        ConvShape {
            batch,
            height: input[0],
            width: input[1],
            in_channels: input[2],
            out_channels: self.filters,
            kernel: self.kernel,
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding,
            bias: self.bias,
        }
    }

    /// The kernel's length: `[kh, kw, in_channels / groups, filters]`.
    pub(super) fn kernel_len(self, in_channels: usize) -> usize {
        self.kernel[0] * self.kernel[1] * (in_channels / self.groups) * self.filters
    }
}

/// An `InputGrad` node's attributes: the gradient of input `slot` of `forward`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct InputGradient<'op> {
    /// The forward op.
    pub forward: &'op Op,
    /// Which of its inputs.
    pub slot: usize,
    /// The per-example shapes of all its inputs.
    pub inputs: &'op [Vec<u64>],
    /// The forward node's name, whose weights and saved statistics it uses.
    pub layer: &'op str,
}

/// A `WeightGrad` node's attributes: the gradient of weight `index` of `forward`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct WeightGradient<'op> {
    /// The forward op.
    pub forward: &'op Op,
    /// Which of its weights (in the order of `ops::params`).
    pub index: usize,
    /// The weight's full name (`conv1.kernel`).
    pub weight: &'op str,
}

/// The kernel family of `op`, with the attributes its kernels need.
pub(super) fn family(op: &Op) -> Family<'_> {
    let pair = |p: [u64; 2]| p.map(|d| d as usize);
    match op {
        Op::Input { .. } => Family::Input,
        Op::Labels { .. } => Family::Labels,
        Op::Upstream { output, .. } => Family::Upstream { output },
        Op::Flatten | Op::Reshape { .. } => Family::Reshape,
        Op::ChannelSlice { start, end } => Family::ChannelSlice {
            start: *start,
            end: *end,
        },
        Op::Dropout { rate } => Family::Dropout { rate: *rate },
        Op::Activation(activation) => activation_family(*activation),
        Op::BatchNorm {
            momentum,
            epsilon,
            scale,
            ..
        } => Family::Pointwise(Pointwise::BatchNorm {
            momentum: *momentum,
            epsilon: *epsilon,
            scale: *scale,
        }),
        Op::ScaleBias => Family::Pointwise(Pointwise::ScaleBias),
        Op::Add => Family::Pointwise(Pointwise::Add),
        Op::Multiply => Family::Pointwise(Pointwise::Multiply),
        Op::Concat { axis } => Family::Concat { axis: *axis },
        Op::Pool2d {
            kind,
            size,
            stride,
            padding,
        } => Family::Window(WindowKind::Pool {
            kind: *kind,
            size: pair(*size),
            stride: pair(*stride),
            padding: *padding,
        }),
        Op::Pad { .. } => Family::Pad {
            amounts: op.pad_amounts(),
        },
        Op::GlobalPool { kind } => Family::Window(WindowKind::GlobalPool { kind: *kind }),
        Op::DepthMaxPool { size } => Family::Window(WindowKind::DepthMaxPool {
            size: *size as usize,
        }),
        Op::Lrn {
            depth_radius,
            bias,
            alpha,
            beta,
        } => Family::Window(WindowKind::Lrn {
            depth_radius: *depth_radius as usize,
            bias: *bias,
            alpha: *alpha,
            beta: *beta,
        }),
        Op::DepthwiseConv2d {
            multiplier,
            kernel,
            stride,
            padding,
            dilation,
            bias,
        } => Family::Window(WindowKind::DepthwiseConv {
            multiplier: *multiplier as usize,
            kernel: pair(*kernel),
            stride: pair(*stride),
            dilation: pair(*dilation),
            padding: *padding,
            bias: *bias,
        }),
        Op::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            bias,
            groups,
        } if *groups > 1 => Family::Grouped(Grouped {
            filters: *filters as usize,
            kernel: pair(*kernel),
            stride: pair(*stride),
            padding: *padding,
            dilation: pair(*dilation),
            bias: *bias,
            groups: *groups as usize,
        }),
        // One group is the GEMM's convolution, exactly as before groups.
        Op::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            bias,
            ..
        } => Family::Contraction(Contraction::Conv {
            filters: *filters as usize,
            kernel: pair(*kernel),
            stride: pair(*stride),
            padding: *padding,
            dilation: pair(*dilation),
            bias: *bias,
        }),
        Op::ConvTranspose2d {
            kernel,
            stride,
            padding,
            dilation,
            bias,
            ..
        } => Family::ConvTranspose(ConvTranspose {
            kernel: pair(*kernel),
            stride: pair(*stride),
            padding: *padding,
            dilation: pair(*dilation),
            bias: *bias,
        }),
        Op::Upsample { factor, mode } => Family::Resample {
            factor: pair(*factor),
            mode: *mode,
        },
        Op::Dense { units, bias } => Family::Contraction(Contraction::Dense {
            units: *units as usize,
            bias: *bias,
        }),
        Op::Rbf { units } => Family::Rbf {
            units: *units as usize,
        },
        Op::CrossEntropy { smoothing, weight } => Family::CrossEntropy {
            smoothing: *smoothing,
            weight: *weight,
        },
        Op::CrossEntropyGrad { .. } => Family::CrossEntropyGrad,
        Op::InputGrad {
            forward,
            slot,
            inputs,
            node,
        } => Family::InputGrad(InputGradient {
            forward,
            slot: *slot,
            inputs,
            layer: node,
        }),
        Op::WeightGrad {
            forward,
            index,
            weight,
            ..
        } => Family::WeightGrad(WeightGradient {
            forward,
            index: *index,
            weight,
        }),
    }
}

/// The family of an activation: softmax is a row reduction, the others
/// are element-wise.
fn activation_family(activation: Activation) -> Family<'static> {
    let pointwise = |a| Family::Pointwise(Pointwise::Activation(a));
    match activation {
        Activation::Softmax => Family::Softmax,
        Activation::Relu => pointwise(PointwiseActivation::Relu),
        Activation::LeakyRelu { alpha } => pointwise(PointwiseActivation::LeakyRelu { alpha }),
        Activation::Elu { alpha } => pointwise(PointwiseActivation::Elu { alpha }),
        Activation::Selu => pointwise(PointwiseActivation::Selu),
        Activation::Tanh => pointwise(PointwiseActivation::Tanh),
        Activation::Sigmoid => pointwise(PointwiseActivation::Sigmoid),
        Activation::Relu6 => pointwise(PointwiseActivation::Relu6),
        Activation::Swish => pointwise(PointwiseActivation::Swish),
        Activation::Gelu { approximate } => pointwise(PointwiseActivation::Gelu { approximate }),
        Activation::HardSigmoid => pointwise(PointwiseActivation::HardSigmoid),
        Activation::HardSwish => pointwise(PointwiseActivation::HardSwish),
        Activation::Mish => pointwise(PointwiseActivation::Mish),
    }
}

impl Contraction {
    /// Whether the op adds a bias (and so has a bias gradient).
    pub(super) fn bias(self) -> bool {
        match self {
            Contraction::Conv { bias, .. } | Contraction::Dense { bias, .. } => bias,
        }
    }

    /// The sizes of the contraction on `batch` inputs of per-example shape
    /// `input`.
    pub(super) fn geometry(self, batch: usize, input: &[usize]) -> Geometry {
        match self {
            Contraction::Conv {
                filters,
                kernel,
                stride,
                padding,
                dilation,
                bias,
            } => Geometry::Conv(ConvShape {
                batch,
                height: input[0],
                width: input[1],
                in_channels: input[2],
                out_channels: filters,
                kernel,
                stride,
                dilation,
                padding,
                bias,
            }),
            Contraction::Dense { units, bias } => {
                let inputs = *input.last().unwrap_or(&1);
                let rows = batch * input.iter().product::<usize>() / inputs.max(1);
                Geometry::Dense(DenseShape {
                    rows,
                    inputs,
                    units,
                    bias,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_a_reduction_and_other_activations_are_element_wise() {
        assert_eq!(
            family(&Op::Activation(Activation::Softmax)),
            Family::Softmax
        );
        assert_eq!(
            family(&Op::Activation(Activation::LeakyRelu { alpha: 0.2 })),
            Family::Pointwise(Pointwise::Activation(PointwiseActivation::LeakyRelu {
                alpha: 0.2
            }))
        );
    }

    #[test]
    fn a_gradient_node_carries_its_forward_op() {
        let forward = Op::Lrn {
            depth_radius: 2,
            bias: 1.0,
            alpha: 1e-4,
            beta: 0.75,
        };
        let op = Op::InputGrad {
            forward: Box::new(forward.clone()),
            slot: 0,
            inputs: vec![vec![4, 4, 8]],
            node: "lrn1".into(),
        };
        let Family::InputGrad(gradient) = family(&op) else {
            panic!("not an input gradient: {:?}", family(&op));
        };
        assert_eq!(gradient.forward, &forward);
        assert_eq!(gradient.layer, "lrn1");
        assert!(matches!(
            family(gradient.forward),
            Family::Window(WindowKind::Lrn {
                depth_radius: 2,
                ..
            })
        ));
    }

    #[test]
    fn a_dense_layer_is_a_gemm_over_rows_of_features() {
        let dense = Contraction::Dense {
            units: 5,
            bias: true,
        };
        let Geometry::Dense(shape) = dense.geometry(2, &[3, 3, 8]) else {
            panic!("not a dense geometry");
        };
        assert_eq!((shape.rows, shape.inputs, shape.units), (18, 8, 5));
        assert!(dense.bias());
    }
}
